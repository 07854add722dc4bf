"""Precision (offline copy of evaluate-metric/precision): binary, or averaged over classes with `average`."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import precision_score

_DESCRIPTION = "Precision score computed by scikit-learn's precision_score."
_CITATION = "scikit-learn: Machine Learning in Python, Pedregosa et al., JMLR 12, pp. 2825-2830, 2011."
_KWARGS_DESCRIPTION = "predictions, references (list of int), labels, pos_label, average, sample_weight, zero_division."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Precision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.precision_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None,
                 zero_division="warn"):
        score = precision_score(references, predictions, labels=labels, pos_label=pos_label, average=average,
                       sample_weight=sample_weight, zero_division=zero_division)
        return {"precision": float(score) if np.ndim(score) == 0 else score}
