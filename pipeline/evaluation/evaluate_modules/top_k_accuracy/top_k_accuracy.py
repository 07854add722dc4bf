"""Top-k accuracy: a hit when the reference is among the k highest scores (sklearn's top_k_accuracy_score)."""

import datasets
import evaluate
from sklearn.metrics import top_k_accuracy_score

_DESCRIPTION = "Fraction of samples whose reference label is among the k labels with the highest scores."
_CITATION = "scikit-learn: Machine Learning in Python, Pedregosa et al., JMLR 12, pp. 2825-2830, 2011."
_KWARGS_DESCRIPTION = "predictions (list of per-class scores), references (list of int), k (int), labels."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("float32")),
                "references": datasets.Value("int32"),
            }),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.top_k_accuracy_score.html"],
        )

    def _compute(self, predictions, references, k=5, labels=None):
        return {"top_k_accuracy": float(top_k_accuracy_score(references, predictions, k=k, labels=labels))}
