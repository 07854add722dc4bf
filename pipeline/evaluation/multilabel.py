"""Multi-label metrics through scikit-learn: mAP, per-class AP, F1 / precision / recall at a threshold, subset
accuracy, Hamming loss; per-class thresholds tuned for F1, saved as `thresholds.json`.

Scores are sigmoid probabilities of the logits, one per class, independent of each other (what
`pipeline("image-classification")` returns for a model whose `config.problem_type` is multi_label_classification).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline.evaluation.report import PREDICTIONS_CSV, REPORT_JSON, REPORT_MD

THRESHOLDS_FILE = "thresholds.json"
DEFAULT_THRESHOLD = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Elementwise logistic function, without overflow warnings for large negative logits."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def _present(y: np.ndarray) -> np.ndarray:
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
    present = _present(y)
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
    for c in _present(y):
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
    classes = _present(y).tolist() or list(range(y.shape[1]))
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


# ------------------------------------------------------------------------------------ the evaluation report

PR_CURVES_PNG = "pr_curves.png"
# Beyond this many classes the PR figure shows the most frequent ones (the JSON has them all).
MAX_CURVES = 15


def build_multilabel_report(logits: np.ndarray, labels: np.ndarray, names: list[str], *, model: str, dataset: str,
                            split: str, saved: np.ndarray | None = None) -> dict:
    """The evaluation report of one split for a multi-label model.

    Args:
        logits: (n, classes) raw outputs; labels: (n, classes) 0/1 references, in the order of `names`.
        model, dataset, split: what was evaluated (written as given).
        saved: the model's own per-class thresholds (`thresholds.json` from training), or None.

    Returns:
        The metrics of `compute_multilabel_metrics` (at 0.5), `per_class` (AP, precision / recall / F1 at 0.5,
        support, and with `saved` the F1 at the saved threshold), `thresholds_saved`, `thresholds_tuned` (tuned on
        this split, so their scores are optimistic), `no_positive`, `num_samples`, `labels`, `model`, `dataset`,
        `split`, `problem_type`.
    """
    scores, y = sigmoid(logits), (np.asarray(labels) > 0.5).astype(np.int64)
    report: dict = {"problem_type": "multi_label_classification"}
    report.update(compute_multilabel_metrics(logits, y))
    rows = per_class_report(scores, y, names, saved if saved is not None else np.full(len(names), DEFAULT_THRESHOLD))
    report["per_class"] = {row.pop("label"): {**row, "f1_at_threshold": row.pop("f1_tuned")} for row in rows}
    if saved is not None:
        from sklearn.metrics import f1_score

        predicted = (scores >= np.asarray(saved)[None, :]).astype(np.int64)
        present = _present(y).tolist() or list(range(y.shape[1]))
        report["f1_macro_at_saved_thresholds"] = float(f1_score(y, predicted, labels=present, average="macro",
                                                                zero_division=0))
        report["thresholds_saved"] = dict(zip(names, map(float, saved), strict=True))
    report["thresholds_tuned"] = threshold_summary(scores, y, names, split)
    report.update({"no_positive": int((y.sum(1) == 0).sum()), "num_samples": int(len(y)), "labels": list(names),
                   "model": model, "dataset": dataset, "split": split})
    return report


def plot_pr_curves(scores: np.ndarray, labels: np.ndarray, names: list[str], path: str | Path,
                   max_curves: int = MAX_CURVES) -> Path:
    """Precision-recall curves, one per class with a positive (the `max_curves` most frequent), AP in the legend."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from pipeline.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    y = np.asarray(labels) > 0.5
    order = [c for c in np.argsort(-y.sum(0), kind="stable") if y[:, c].any()][:max_curves]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for c in order:
        precision, recall, _ = precision_recall_curve(y[:, c], scores[:, c])
        ax.plot(recall, precision, lw=1.4, label=f"{names[c]} (AP {average_precision_score(y[:, c], scores[:, c]):.3f},"
                f" {int(y[:, c].sum())} positives)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    shown = f"{len(order)} most frequent of {len(names)} classes" if len(order) < int(y.any(0).sum()) else \
        f"{len(order)} classes"
    ax.set_title(f"Precision-recall per class ({shown})")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _report_markdown(report: dict) -> str:
    lines = [f"# Evaluation of {report['model']} (multi-label)", "",
             f"{report['dataset']}, split {report['split']}: {report['num_samples']} images, "
             f"{report['no_positive']} with no positive label.", "", "| Metric | Value |", "|---|---|"]
    for name in ("map", "map_micro", "auroc", "f1_micro", "f1_macro", "precision", "recall", "subset_accuracy",
                 "hamming_loss", "f1_macro_at_saved_thresholds"):
        if name in report:
            lines.append(f"| {name} | {report[name]:.4f} |")
    tuned = report["thresholds_tuned"]
    lines += [f"| f1_macro at thresholds tuned on {tuned['tuned_on']} (optimistic: same split) | "
              f"{tuned['f1_macro_tuned']:.4f} |", "",
              "## Per class", "", "AP; precision, recall and F1 at 0.5; the threshold used for the last column is the "
              "model's saved one (thresholds.json from training), else 0.5.", "",
              "| Class | Support | AP | Precision | Recall | F1 | Threshold | F1 at threshold |",
              "|---|---|---|---|---|---|---|---|"]
    for name, row in sorted(report["per_class"].items(), key=lambda item: -item[1]["support"]):
        ap = "n/a" if row["ap"] is None else f"{row['ap']:.4f}"
        lines.append(f"| {name} | {row['support']} | {ap} | {row['precision']:.4f} | {row['recall']:.4f} | "
                     f"{row['f1']:.4f} | {row['threshold']:.3f} | {row['f1_at_threshold']:.4f} |")
    lines += ["", "## Precision-recall curves", "", f"![Precision-recall curves]({PR_CURVES_PNG})"]
    return "\n".join(lines) + "\n"


def write_multilabel_report(report: dict, out_dir: str | Path, scores: np.ndarray, labels: np.ndarray,
                            ids: list[str], id_column: str = "path", save_thresholds: bool = True) -> list[Path]:
    """Write eval_report.json / .md, predictions.csv (true labels, labels at the thresholds used, every score),
    pr_curves.png and, with `save_thresholds`, thresholds.json (tuned on this split) into `out_dir`. Returns the files
    written."""
    import csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = report["labels"]
    cut = np.array([report["per_class"][n]["threshold"] for n in names])
    y = np.asarray(labels) > 0.5
    with (out / PREDICTIONS_CSV).open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([id_column, "true_labels", "predicted_labels", "scores"])
        for i, row_id in enumerate(ids):
            writer.writerow([row_id, json.dumps([n for n, t in zip(names, y[i], strict=True) if t]),
                             json.dumps([n for n, s, c in zip(names, scores[i], cut, strict=True) if s >= c]),
                             json.dumps({n: round(float(s), 6) for n, s in zip(names, scores[i], strict=True)})])
    written = [out / PREDICTIONS_CSV, plot_pr_curves(scores, labels, names, out / PR_CURVES_PNG)]
    if save_thresholds:
        written.append(write_thresholds(report["thresholds_tuned"], out))
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (out / REPORT_MD).write_text(_report_markdown(report))
    return [*written, out / REPORT_JSON, out / REPORT_MD]
