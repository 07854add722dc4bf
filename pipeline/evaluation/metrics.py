"""Classification metrics through `evaluate`, loadable with no network.

The modules are loaded from the offline copies in `pipeline/evaluate_modules/` (what `evaluate.load("accuracy")`
would fetch from the Hub), so a run behind a firewall or with HF_HUB_OFFLINE=1 still evaluates.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

MODULES_DIR = Path(__file__).parent / "evaluate_modules"
TOP_K = 5


@cache
def load_metric(name: str):
    """`evaluate.load` of the offline copy of metric `name` (accuracy, f1, precision, recall, top_k_accuracy)."""
    import evaluate

    return evaluate.load(str(MODULES_DIR / name))


class ClassificationMetrics:
    """`compute_metrics` for the Trainer and the Accelerate loop: logits and labels in, a flat dict out.

    Reports accuracy, and macro-averaged f1, precision and recall (each class counts the same, whatever its size);
    top-5 accuracy only when there are more than 5 classes (with 5 or fewer it is always 1).
    """

    def __init__(self, num_labels: int):
        self.num_labels = num_labels

    def __call__(self, eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        return compute_metrics(np.asarray(logits), np.asarray(labels), self.num_labels)


def compute_metrics(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    """Compute the metrics for one evaluation.

    Args:
        logits: (n, num_labels) scores.
        labels: (n,) reference label ids.
        num_labels: number of classes (decides whether top-5 is reported, and the macro average's classes).

    Returns:
        accuracy, f1, precision, recall (macro), and top5_accuracy when num_labels > 5.
    """
    predictions = logits.argmax(-1)
    classes = list(range(num_labels))
    results = {"accuracy": load_metric("accuracy").compute(predictions=predictions, references=labels)["accuracy"]}
    for name in ("f1", "precision", "recall"):
        # zero_division=0: a class never predicted scores 0 instead of a warning per evaluation.
        results[name] = load_metric(name).compute(
            predictions=predictions, references=labels, labels=classes, average="macro", zero_division=0
        )[name]
    if num_labels > TOP_K:
        results[f"top{TOP_K}_accuracy"] = load_metric("top_k_accuracy").compute(
            predictions=logits, references=labels, k=TOP_K, labels=classes
        )["top_k_accuracy"]
    return {k: float(v) for k, v in results.items()}


def metrics_for(num_labels: int, multi_label: bool = False):
    """The `compute_metrics` of a run: `ClassificationMetrics`, or for multi-label data
    `evaluation.multilabel.MultiLabelMetrics` (map, F1s, subset accuracy, Hamming loss)."""
    if multi_label:
        from vit_pipeline.evaluation.multilabel import MultiLabelMetrics

        return MultiLabelMetrics(num_labels)
    return ClassificationMetrics(num_labels)
