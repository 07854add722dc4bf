"""The report's figures, drawn with matplotlib's Agg backend (no display needed): confusion matrix, reliability
diagram, grid of the most confident errors, training curves.

Every function writes one PNG and returns its path; nothing is drawn from numbers the run did not measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Beyond this many classes the matrix cells are too small to read: the figure shows the most-confused pairs.
MAX_MATRIX_CLASSES = 30
DPI = 110


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write `fig` as a PNG and close it."""
    path = Path(path)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    pyplot().close(fig)
    return path


def plot_confusion_matrix(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path,
                          pairs: list[tuple[str, str, int, float]] | None = None,
                          max_classes: int = MAX_MATRIX_CLASSES) -> Path:
    """The confusion matrix normalised per row (true class), with the counts written in the cells.

    With more than `max_classes` classes, a bar chart of the most-confused pairs (`pairs`, from
    `report.most_confused`) instead, which stays readable with hundreds of classes.
    """
    plt = pyplot()
    matrix = np.asarray(confusion, dtype=np.int64)
    n = len(labels)
    if n > max_classes:
        pairs = pairs or []
        fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(pairs), 3) + 1))
        names = [f"{t} \u2192 {p}" for t, p, _, _ in pairs][::-1]
        counts = [c for _, _, c, _ in pairs][::-1]
        ax.barh(range(len(pairs)), counts, color="#c0392b")
        ax.set_yticks(range(len(pairs)), names, fontsize=8)
        for y, (count, share) in enumerate(zip(counts, [s for *_, s in pairs][::-1], strict=True)):
            ax.text(count, y, f" {count} ({share:.0%})", va="center", fontsize=8)
        ax.set_xlabel("images (share of the true class)")
        ax.set_title(f"Most confused pairs (true \u2192 predicted), {n} classes")
        if not pairs:
            ax.text(0.5, 0.5, "no errors", ha="center", va="center", transform=ax.transAxes)
        return save_figure(fig, path)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    font = 9 if n <= 12 else 7 if n <= 20 else 5
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=font,
                        color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=90 if n > 8 else 45, ha="right" if n <= 8 else "center", fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix ({int(matrix.sum())} images)")
    return save_figure(fig, path)


def plot_reliability(bins: list[tuple[float, float, float, int]], ece: float, path: str | Path,
                     before: tuple[list[tuple[float, float, float, int]], float] | None = None) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the bin counts below.

    `before`: the bins and ECE of the same images before temperature scaling, drawn as a line over the bars (and
    their counts as an outline).
    """
    plt = pyplot()
    width = 1.0 / len(bins)
    fig, (ax, counts_ax) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lefts = [b[0] for b in bins]
    ax.bar(lefts, [b[2] for b in bins], width=width, align="edge", edgecolor="black", color="#3498db",
           label="accuracy")
    ax.bar(lefts, [b[1] - b[2] if b[3] else 0.0 for b in bins], bottom=[b[2] for b in bins], width=width,
           align="edge", color="#e74c3c", alpha=0.4, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    if before is not None:
        filled = [b for b in before[0] if b[3]]
        ax.plot([b[1] for b in filled], [b[2] for b in filled], "o-", color="#e67e22",
                label=f"before calibration (ECE {before[1]:.4f})")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram ({'calibrated, ' if before else ''}ECE {ece:.4f}, {len(bins)} bins)")
    ax.legend(loc="upper left")
    counts_ax.bar(lefts, [b[3] for b in bins], width=width, align="edge", color="grey")
    if before is not None:
        counts_ax.step([b[0] for b in before[0]] + [1.0], [b[3] for b in before[0]] + [before[0][-1][3]],
                       where="post", color="#e67e22", linewidth=1)
    counts_ax.set_xlabel("confidence (top-1 softmax score)")
    counts_ax.set_ylabel("images")
    counts_ax.set_xlim(0, 1)
    return save_figure(fig, path)


def plot_misclassified(items: list[tuple[Any, dict]], path: str | Path, columns: int = 4) -> Path:
    """A grid of errors: each image with its true label, predicted label and score (most confident first)."""
    plt = pyplot()
    rows = max(1, -(-len(items) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.4, rows * 2.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, row) in zip(axes.flat, items, strict=False):
        ax.imshow(np.asarray(image.convert("RGB")))
        ax.set_title(f"true {row['true_label']}\npred {row['predicted_label']} ({row['score']:.2f})", fontsize=8)
    if not items:
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle("Most confident errors")
    return save_figure(fig, path)


def training_curves(log_history: list[dict[str, Any]], metric: str | None) -> dict[str, list[tuple[float, float]]]:
    """(epoch, value) series from a Trainer-style log history: train loss, eval loss, and the eval metric."""
    series: dict[str, list[tuple[float, float]]] = {"train loss": [], "eval loss": []}
    key = f"eval_{metric}" if metric and not metric.startswith("eval_") else metric
    if key and key != "eval_loss":
        series[key[len("eval_"):]] = []
    for entry in log_history:
        epoch = entry.get("epoch")
        if epoch is None:
            continue
        if "loss" in entry:
            series["train loss"].append((float(epoch), float(entry["loss"])))
        if "eval_loss" in entry:
            series["eval loss"].append((float(epoch), float(entry["eval_loss"])))
        if key and key != "eval_loss" and key in entry:
            series[key[len("eval_"):]].append((float(epoch), float(entry[key])))
    return {name: points for name, points in series.items() if points}


def plot_training_curves(log_history: list[dict[str, Any]], metric: str | None, path: str | Path) -> Path | None:
    """Loss (train and eval) and the best-model metric per epoch; None (nothing drawn) when nothing was logged."""
    series = training_curves(log_history, metric)
    if not series:
        return None
    plt = pyplot()
    metric_names = [name for name in series if not name.endswith("loss")]
    fig, axes = plt.subplots(1, 1 + bool(metric_names), figsize=(5 * (1 + bool(metric_names)), 3.6), squeeze=False)
    loss_ax = axes[0, 0]
    for name in ("train loss", "eval loss"):
        if name in series:
            xs, ys = zip(*series[name], strict=True)
            loss_ax.plot(xs, ys, marker="o", label=name)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    loss_ax.set_title("Loss")
    for name in metric_names:
        ax = axes[0, 1]
        xs, ys = zip(*series[name], strict=True)
        ax.plot(xs, ys, marker="o", color="#27ae60")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(f"Eval {name}")
    return save_figure(fig, path)


def plot_rollouts(items: list[tuple[Any, Any, str]], path: str | Path, map_title: str = "attention rollout") -> Path:
    """Explanation figures: for each (model's view of the image, map overlay, title), the two side by side (the map
    titled `map_title`: the method); several items are stacked in rows."""
    plt = pyplot()
    fig, axes = plt.subplots(len(items), 2, figsize=(6, 3.1 * len(items)), squeeze=False)
    for row, (view, heat, title) in zip(axes, items, strict=True):
        for ax, picture, caption in zip(row, (view, heat), (title, map_title), strict=True):
            ax.imshow(picture)
            ax.set_title(caption, fontsize=9)
            ax.axis("off")
    return save_figure(fig, path)
