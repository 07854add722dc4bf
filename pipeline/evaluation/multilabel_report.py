"""The evaluation report of a multi-label model: eval_report.json / .md, predictions.csv, pr_curves.png and the
thresholds tuned on the evaluated split (the metrics and thresholds themselves are `evaluation.multilabel`'s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vit_pipeline.evaluation.multilabel import (
    DEFAULT_THRESHOLD,
    compute_multilabel_metrics,
    per_class_report,
    present_classes,
    sigmoid,
    threshold_summary,
    write_thresholds,
)
from vit_pipeline.evaluation.report import PREDICTIONS_CSV, REPORT_JSON, REPORT_MD

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
        present = present_classes(y).tolist() or list(range(y.shape[1]))
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

    from vit_pipeline.evaluation.plots import pyplot, save_figure

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
