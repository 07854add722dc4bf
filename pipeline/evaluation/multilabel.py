"""Multi-label metrics through scikit-learn: mAP, per-class AP, F1 / precision / recall at a threshold, subset
accuracy, Hamming loss; per-class thresholds tuned for F1, saved as `thresholds.json`. The evaluation report (its
files and plots) is `evaluation.multilabel_report`.

Scores are sigmoid probabilities of the logits, one per class, independent of each other (what
`pipeline("image-classification")` returns for a model whose `config.problem_type` is multi_label_classification).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

THRESHOLDS_FILE = "thresholds.json"
DEFAULT_THRESHOLD = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Elementwise logistic function, without overflow warnings for large negative logits."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def present_classes(y: np.ndarray) -> np.ndarray:
    """The classes with at least one positive in `y` (n, classes)."""
    return np.flatnonzero(y.sum(0) > 0)


def compute_multilabel_metrics(logits: np.ndarray, labels: np.ndarray, threshold: float = DEFAULT_THRESHOLD
                               ) -> dict[str, float]:
    """Compute the multi-label metrics for one evaluation.

    Args:
        logits: (n, classes) raw model outputs (sigmoid is applied here).
        labels: (n, classes) 0/1 references.
        threshold: a class is predicted when its probability is at least this.

    Returns:
        map (mean over the classes with at least one positive of the average precision), map_micro (average
        precision of all (image, class) pairs pooled), auroc (macro ROC AUC over the classes with positives and
        negatives), f1_micro, f1_macro, precision and recall (macro), all at
        `threshold`, subset_accuracy (every class of an image right), hamming_loss (share of wrong (image, class)
        pairs). Macro averages run over the classes with at least one positive, as map does; with no positive at
        all the ranking metrics are NaN.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        hamming_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    scores = sigmoid(logits)
    y = (np.asarray(labels) > 0.5).astype(np.int64)
    predicted = (scores >= threshold).astype(np.int64)
    present = present_classes(y)
    results: dict[str, float] = {}
    if len(present):
        results["map"] = float(np.mean(average_precision_score(y[:, present], scores[:, present], average=None)))
        results["map_micro"] = float(average_precision_score(y, scores, average="micro"))
    else:
        results["map"] = results["map_micro"] = math.nan
    # AUROC needs positives and negatives: macro over the classes that have both (what ChestX-ray14 papers report).
    both = np.flatnonzero((y.sum(0) > 0) & (y.sum(0) < len(y)))
    results["auroc"] = float(roc_auc_score(y[:, both], scores[:, both], average="macro")) if len(both) else math.nan
    results["f1_micro"] = float(f1_score(y, predicted, average="micro", zero_division=0))
    classes = present.tolist() or list(range(y.shape[1]))
    results["f1_macro"] = float(f1_score(y, predicted, labels=classes, average="macro", zero_division=0))
    results["precision"] = float(precision_score(y, predicted, labels=classes, average="macro", zero_division=0))
    results["recall"] = float(recall_score(y, predicted, labels=classes, average="macro", zero_division=0))
    results["subset_accuracy"] = float(accuracy_score(y, predicted))
    results["hamming_loss"] = float(hamming_loss(y, predicted))
    return results


class MultiLabelMetrics:
    """`compute_metrics` for multi-label runs, on both backends: logits and multi-hot labels in, a flat dict out.

    Keeps the scores and labels of the latest call in `last` (probabilities, 0/1 labels): the command reads the final
    evaluation's from there for the per-class table and the thresholds, without predicting the eval split again.
    """

    def __init__(self, num_labels: int):
        self.num_labels = num_labels
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        logits, labels = np.asarray(logits), np.asarray(labels)
        self.last = (sigmoid(logits), (labels > 0.5).astype(np.int64))
        return compute_multilabel_metrics(logits, labels)


def tune_thresholds(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class, the probability threshold with the best F1 on these scores (0.5 for a class with no positive).

    Candidates are the scores themselves (scikit-learn's `precision_recall_curve`); a tie keeps the highest
    threshold, the one with fewer false positives.
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(labels) > 0.5
    thresholds = np.full(y.shape[1], DEFAULT_THRESHOLD)
    for c in present_classes(y):
        precision, recall, candidates = precision_recall_curve(y[:, c], scores[:, c])
        # The curve's last point (precision 1, recall 0) has no threshold.
        precision, recall = precision[:-1], recall[:-1]
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        best = np.flatnonzero(f1 == f1.max())
        thresholds[c] = float(candidates[best[-1]])
    return thresholds


def per_class_report(scores: np.ndarray, labels: np.ndarray, names: list[str],
                     thresholds: np.ndarray | None = None) -> list[dict]:
    """One row per class: support (positives), AP, precision / recall / F1 at 0.5, and at the tuned threshold.

    AP is None for a class with no positive in these labels (it is undefined, and map leaves the class out).
    """
    from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

    y = (np.asarray(labels) > 0.5).astype(np.int64)
    thresholds = tune_thresholds(scores, y) if thresholds is None else np.asarray(thresholds)
    rows = []
    for c, name in enumerate(names):
        support = int(y[:, c].sum())
        at_half = (scores[:, c] >= DEFAULT_THRESHOLD).astype(np.int64)
        tuned = (scores[:, c] >= thresholds[c]).astype(np.int64)
        rows.append({
            "label": name,
            "support": support,
            "ap": float(average_precision_score(y[:, c], scores[:, c])) if support else None,
            "precision": float(precision_score(y[:, c], at_half, zero_division=0)),
            "recall": float(recall_score(y[:, c], at_half, zero_division=0)),
            "f1": float(f1_score(y[:, c], at_half, zero_division=0)),
            "threshold": float(thresholds[c]),
            "f1_tuned": float(f1_score(y[:, c], tuned, zero_division=0)),
        })
    return rows


def threshold_summary(scores: np.ndarray, labels: np.ndarray, names: list[str], split: str) -> dict:
    """What `thresholds.json` holds: the per-class thresholds, the split they were tuned on, and the F1s there.

    The F1s at the tuned thresholds are measured on the very split the thresholds were tuned on, so they are
    optimistic; the file and the card say so (`tuned_on`). Tune on a split you do not report on for a fair figure.
    """
    from sklearn.metrics import f1_score

    y = (np.asarray(labels) > 0.5).astype(np.int64)
    thresholds = tune_thresholds(scores, y)
    predicted = (scores >= thresholds[None, :]).astype(np.int64)
    classes = present_classes(y).tolist() or list(range(y.shape[1]))
    return {
        "thresholds": {name: round(float(t), 6) for name, t in zip(names, thresholds, strict=True)},
        "default_threshold": DEFAULT_THRESHOLD,
        "tuned_on": split,
        "tuned_for": "f1 per class",
        "note": f"tuned on the {split} split and scored on that same split: the tuned figures are optimistic",
        "f1_micro_tuned": float(f1_score(y, predicted, average="micro", zero_division=0)),
        "f1_macro_tuned": float(f1_score(y, predicted, labels=classes, average="macro", zero_division=0)),
    }


def write_thresholds(summary: dict, output_dir: str | Path) -> Path:
    """Write `thresholds.json` (from `threshold_summary`) into `output_dir`."""
    path = Path(output_dir) / THRESHOLDS_FILE
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def tune_and_save_thresholds(metrics: MultiLabelMetrics, names: list[str], split: str, output_dir: str | Path
                             ) -> tuple[list[dict], dict]:
    """From the latest evaluation `metrics` scored: tune the thresholds, write `thresholds.json` to `output_dir`.

    Returns:
        The per-class table (`per_class_report`, at the tuned thresholds) and the summary (`threshold_summary`).
    """
    scores, references = metrics.last
    summary = threshold_summary(scores, references, names, split)
    write_thresholds(summary, output_dir)
    table = per_class_report(scores, references, names, [summary["thresholds"][name] for name in names])
    return table, summary


def load_thresholds(model_dir: str | Path) -> dict[str, float] | None:
    """The per-class thresholds saved with a model (`thresholds.json`), or None when there are none."""
    path = Path(model_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    return {name: float(t) for name, t in json.loads(path.read_text())["thresholds"].items()}


def saved_thresholds(model: str, names: list[str], token: str | None = None, revision: str = "main"
                     ) -> np.ndarray | None:
    """The per-class thresholds of a model (a folder, or a Hub id whose repo holds `thresholds.json`), in label
    order (0.5 for a label they do not name); None for a model saved without them."""
    local = Path(model)
    found = None
    if local.is_dir():
        found = load_thresholds(local)
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            found = load_thresholds(Path(hf_hub_download(model, THRESHOLDS_FILE, revision=revision,
                                                         token=token)).parent)
        except EntryNotFoundError:
            found = None
    if found is None:
        return None
    return np.array([found.get(name, DEFAULT_THRESHOLD) for name in names])


def multilabel_prediction_table(paths: list[str], logits: np.ndarray, names: list[str], thresholds) -> list[dict]:
    """Rows of path, label, score, labels, scores for a multi-label model: every label whose sigmoid score is at or
    above its threshold (`thresholds`: one number, or one per class), best first; `label` / `score` are the best of
    them (None when no label passes: a "no finding" image)."""
    scores = sigmoid(logits)
    cut = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), scores.shape[1:])
    rows = []
    for path, p in zip(paths, scores, strict=True):
        kept = [int(j) for j in np.argsort(-p, kind="stable") if p[j] >= cut[j]]
        rows.append({"path": path, "label": names[kept[0]] if kept else None,
                     "score": float(p[kept[0]]) if kept else None,
                     "labels": [names[j] for j in kept], "scores": [float(p[j]) for j in kept]})
    return rows
