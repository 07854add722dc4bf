"""The evaluation report: what a model gets right and wrong on one split, for machines and for people.

`build_report` turns logits and labels into one dict (a function per section, so other tasks add theirs);
`write_report` writes it as `eval_report.json` and `eval_report.md`, the per-image `predictions.csv`, and the
figures (`confusion_matrix.png`, `reliability_diagram.png`, `misclassified.png`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vit_pipeline.evaluation.inference import softmax

logger = logging.getLogger(__name__)

REPORT_JSON = "eval_report.json"
REPORT_MD = "eval_report.md"
PREDICTIONS_CSV = "predictions.csv"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability_diagram.png"
MISCLASSIFIED_PNG = "misclassified.png"
ECE_BINS = 15
TOP_K = 5


# ----------------------------------------------------------------------------------------------- sections


def classification_section(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy, and precision / recall / f1 both macro-averaged (each class counts the same) and weighted by support.

    Classes that are never predicted (or never present) score 0 rather than raising a warning.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    classes = list(range(num_labels))
    section = {"accuracy": float(accuracy_score(labels, predictions))}
    for average, suffix in (("macro", ""), ("weighted", "_weighted")):
        precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, labels=classes,
                                                                   average=average, zero_division=0)
        section.update({f"precision{suffix}": float(precision), f"recall{suffix}": float(recall),
                        f"f1{suffix}": float(f1)})
    return section


def top_k_section(logits: np.ndarray, labels: np.ndarray, k: int = TOP_K) -> dict[str, float]:
    """Top-k accuracy, only when there are more than k classes (with k or fewer it is always 1)."""
    if logits.shape[1] <= k:
        return {}
    from sklearn.metrics import top_k_accuracy_score

    return {f"top{k}_accuracy": float(top_k_accuracy_score(labels, logits, k=k,
                                                           labels=list(range(logits.shape[1]))))}


def per_class_section(predictions: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Per-class precision, recall, f1 and support, the label order, and the confusion matrix (rows: true)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=classes,
                                                                     average=None, zero_division=0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(label_names)}
    matrix = confusion_matrix(labels, predictions, labels=classes)
    return {"per_class": per_class, "labels": list(label_names), "confusion_matrix": matrix.tolist()}


def calibration_bins(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
                     ) -> list[tuple[float, float, float, int]]:
    """Equal-width confidence bins: (lower edge, mean confidence, accuracy, count) for each bin, empty ones included."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edge_i, edge_i+1]; a confidence of exactly 0 falls in the first bin.
    index = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        members = index == i
        count = int(members.sum())
        out.append((float(edges[i]), float(confidences[members].mean()) if count else 0.0,
                    float(correct[members].mean()) if count else 0.0, count))
    return out


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): the count-weighted mean gap between accuracy and confidence over equal-width bins."""
    total = len(confidences)
    if total == 0:
        return 0.0
    return float(sum(count / total * abs(accuracy - confidence)
                     for _, confidence, accuracy, count in calibration_bins(confidences, correct, bins)))


def calibration_section(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Expected calibration error of the top-1 softmax score, 15 bins."""
    probs = softmax(logits)
    return {"ece": expected_calibration_error(probs.max(axis=1), probs.argmax(axis=1) == labels)}


def interval_section(predictions: np.ndarray, labels: np.ndarray, label_names: list[str], per_class: dict,
                     seed: int = 0) -> dict[str, list[float]]:
    """95% percentile bootstrap intervals (`evaluation.uncertainty`, 1,000 resamples, seeded) of accuracy and macro
    F1, returned as `accuracy_ci95` / `f1_ci95`; each class's `recall_ci95` is added to its `per_class` row (None for
    a class with no image). One resampling serves them all."""
    from vit_pipeline.evaluation.uncertainty import bootstrap_intervals

    intervals = bootstrap_intervals(predictions, labels, len(label_names), seed=seed)
    for name, interval in zip(label_names, intervals["recall"], strict=True):
        per_class[name]["recall_ci95"] = interval
    return {"accuracy_ci95": intervals["accuracy"], "f1_ci95": intervals["f1"]}


def build_report(logits: np.ndarray, labels: np.ndarray, label_names: list[str], *, model: str, dataset: str,
                 split: str, seed: int = 0, temperature: float | None = None) -> dict[str, Any]:
    """The evaluation report of one split (single-label classification).

    Args:
        logits: [n, num_labels] scores.
        labels: [n] true label ids (in the order of `label_names`).
        label_names: class names, in label-id order (the model's `id2label`).
        model, dataset, split: what was evaluated (written into the report as given).
        seed: seeds the bootstrap of the intervals (`accuracy_ci95`, `f1_ci95`, per-class `recall_ci95`).
        temperature: the temperature folded into the model (`evaluation.calibration`): adds `calibration`, the
            scores before and after it.

    Returns:
        accuracy; precision, recall, f1 (macro) and their `_weighted` forms; top5_accuracy when there are more than
        5 classes; per_class (with recall_ci95); labels; confusion_matrix (rows: true, columns: predicted); ece (15
        bins); accuracy_ci95 and f1_ci95 (bootstrap, seeded); num_samples; model; dataset; split; calibration (T,
        ECE and NLL before and after) for a calibrated model.
    """
    from vit_pipeline.evaluation.calibration import calibration_section as temperature_section

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    predictions = logits.argmax(axis=1)
    report: dict[str, Any] = {}
    report.update(classification_section(predictions, labels, len(label_names)))
    report.update(top_k_section(logits, labels))
    report.update(per_class_section(predictions, labels, label_names))
    report.update(calibration_section(logits, labels))
    report.update(temperature_section(logits, labels, temperature))
    report.update(interval_section(predictions, labels, label_names, report["per_class"], seed=seed))
    report.update({"num_samples": int(len(labels)), "model": model, "dataset": dataset, "split": split})
    return report


# ----------------------------------------------------------------------------------------------- analysis


def most_confused(confusion: Sequence[Sequence[int]], labels: Sequence[str], k: int = 10
                  ) -> list[tuple[str, str, int, float]]:
    """The k largest off-diagonal cells: (true label, predicted label, count, share of the true class)."""
    matrix = np.asarray(confusion)
    pairs = []
    for i, j in zip(*np.nonzero(matrix), strict=True):
        if i != j:
            pairs.append((labels[i], labels[j], int(matrix[i, j]), float(matrix[i, j] / max(matrix[i].sum(), 1))))
    return sorted(pairs, key=lambda p: (-p[2], -p[3], p[0], p[1]))[:k]


def prediction_rows(logits: np.ndarray, labels: np.ndarray, label_names: list[str], ids: Sequence[str]
                    ) -> list[dict[str, Any]]:
    """One row per image: id (path or row), true label, predicted label, score (softmax of the predicted label)."""
    probs = softmax(np.asarray(logits))
    predicted = probs.argmax(axis=1)
    return [{"id": str(ids[i]), "true_label": label_names[int(labels[i])], "predicted_label": label_names[p],
             "score": float(probs[i, p])} for i, p in enumerate(predicted)]


def class_table(report: dict[str, Any], limit: int = 20) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """Per-class rows sorted by f1 (best first); with more than `limit` classes, the top and bottom limit/2 only.

    Returns:
        (top rows, bottom rows); bottom is empty when every class fits.
    """
    rows = sorted(report["per_class"].items(), key=lambda item: (-item[1]["f1"], item[0]))
    if len(rows) <= limit:
        return rows, []
    half = limit // 2
    return rows[:half], rows[-half:]


# ----------------------------------------------------------------------------------------------- writing


def _interval(interval: list[float] | None, opening: str = " (") -> str:
    """` (low-high)` after a figure, or nothing when it has no interval."""
    return f"{opening}{interval[0]:.4f}-{interval[1]:.4f})" if interval else ""


def _markdown(report: dict[str, Any], figures: list[str]) -> str:
    lines = [f"# Evaluation of {report['model']}", "",
             f"{report['dataset']}, split {report['split']}: {report['num_samples']} images.", "",
             "| Metric | Value |", "|---|---|"]
    for name in ("accuracy", "precision", "recall", "f1", "precision_weighted", "recall_weighted", "f1_weighted",
                 "top5_accuracy", "ece"):
        if name in report:
            lines.append(f"| {name} | {report[name]:.4f}{_interval(report.get(f'{name}_ci95'), ' (95% CI ')} |")
    lines += _calibration_lines(report) + _overlap_lines(report)
    top, bottom = class_table(report)
    lines += ["", "## Per class" + (" (best and worst by f1)" if bottom else ""), "",
              "| Class | Precision | Recall (95% CI) | F1 | Support |", "|---|---|---|---|---|"]
    for name, row in top + ([("...", None)] if bottom else []) + bottom:
        lines.append("| ... | | | | |" if row is None else
                     f"| {name} | {row['precision']:.4f} | {row['recall']:.4f}{_interval(row.get('recall_ci95'))} | "
                     f"{row['f1']:.4f} | {row['support']} |")
    pairs = most_confused(report["confusion_matrix"], report["labels"])
    if pairs:
        lines += ["", "## Most confused", "", "| True | Predicted | Count | Share of true class |", "|---|---|---|---|"]
        lines += [f"| {t} | {p} | {n} | {share:.1%} |" for t, p, n, share in pairs]
    titles = {CONFUSION_PNG: "Confusion matrix", RELIABILITY_PNG: "Reliability diagram",
              MISCLASSIFIED_PNG: "Most confident errors"}
    for name in figures:
        lines += ["", f"## {titles.get(name, name)}", "", f"![{titles.get(name, name)}]({name})"]
    return "\n".join(lines) + "\n"


def _uncalibrated(report: dict[str, Any]) -> tuple[list, float] | None:
    """The reliability bins and ECE before temperature scaling, for a calibrated model's diagram (else None)."""
    calibration = report.get("calibration")
    return (calibration["bins_before"], calibration["ece_before"]) if calibration else None


def _calibration_lines(report: dict[str, Any]) -> list[str]:
    """The report's calibration lines: T and the scores before and after it (none for an uncalibrated model)."""
    calibration = report.get("calibration")
    if not calibration:
        return []
    return ["", f"Calibrated by temperature scaling (T = {calibration['temperature']:.3f}, fitted on the eval split "
            f"of training): ECE {calibration['ece_before']:.4f} before, {calibration['ece_after']:.4f} after; NLL "
            f"{calibration['nll_before']:.4f} before, {calibration['nll_after']:.4f} after."]


def _overlap_lines(report: dict[str, Any]) -> list[str]:
    """The warning of a report on images the model trained on (`evaluate --allow_train_overlap`)."""
    overlap = report.get("train_overlap")
    if not overlap:
        return []
    return ["", f"**Warning: {overlap} of these {report['num_samples']} images are among the training rows of the "
            "run: these figures overstate how the model does on new images.**"]


def write_predictions(rows: list[dict[str, Any]], path: str | Path, id_column: str = "path") -> Path:
    """Write prediction rows as CSV: `path` (or `row`), `true_label`, `predicted_label`, `score`."""
    path = Path(path)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([id_column, "true_label", "predicted_label", "score"])
        for row in rows:
            writer.writerow([row["id"], row["true_label"], row["predicted_label"], f"{row['score']:.6f}"])
    return path


def write_report(report: dict[str, Any], out_dir: str | Path, predictions: list[dict[str, Any]] | None = None,
                 images: Callable[[int], Any] | None = None, id_column: str = "path") -> list[Path]:
    """Write the report and its figures into `out_dir`.

    Args:
        report: what `build_report` returned.
        out_dir: the folder (created when missing).
        predictions: `prediction_rows` of the same images: written as predictions.csv, and used for the reliability
            diagram and the grid of errors (neither is drawn without them).
        images: row index -> PIL image, for the grid of the most confident errors.
        id_column: the CSV's first column name (`path`, or `row` when the images have no file).

    Returns:
        The files written.
    """
    from vit_pipeline.evaluation import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    figures = [CONFUSION_PNG]
    plots.plot_confusion_matrix(report["confusion_matrix"], report["labels"], out / CONFUSION_PNG,
                                pairs=most_confused(report["confusion_matrix"], report["labels"], k=20))
    if predictions:
        written.append(write_predictions(predictions, out / PREDICTIONS_CSV, id_column))
        confidences = np.array([r["score"] for r in predictions])
        correct = np.array([r["true_label"] == r["predicted_label"] for r in predictions])
        plots.plot_reliability(calibration_bins(confidences, correct), report["ece"], out / RELIABILITY_PNG,
                               before=_uncalibrated(report))
        figures.append(RELIABILITY_PNG)
        errors = sorted((i for i, r in enumerate(predictions) if r["true_label"] != r["predicted_label"]),
                        key=lambda i: -predictions[i]["score"])[:16]
        if images is not None:
            plots.plot_misclassified([(images(i), predictions[i]) for i in errors], out / MISCLASSIFIED_PNG)
            figures.append(MISCLASSIFIED_PNG)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (out / REPORT_MD).write_text(_markdown(report, figures))
    written += [out / REPORT_JSON, out / REPORT_MD] + [out / f for f in figures]
    return written
