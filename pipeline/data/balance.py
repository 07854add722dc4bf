"""Class balance: images per class and split, the imbalance ratio, and classes a split lacks (multi-label: images
carrying each label)."""

from __future__ import annotations

import numpy as np


def class_balance(labels: list[str], splits: dict[str, list]) -> dict:
    """Count the images of every class in every split.

    Args:
        labels: the class names, in label-id order.
        splits: {split: its `label` column}: ClassLabel ids, or multi-hot rows (one 0/1 per class).

    Returns:
        {"counts": {split: {class: images}}, "imbalance_ratio": {split: largest / smallest class present},
        "missing": {split: classes with no image}}.
    """
    counts, ratio, missing = {}, {}, {}
    for split, values in splits.items():
        values = np.asarray(values)
        per_class = (values.sum(axis=0) if values.ndim == 2 else np.bincount(values.astype(int),
                                                                             minlength=len(labels)))
        per_class = [int(n) for n in per_class[: len(labels)]]
        counts[split] = dict(zip(labels, per_class, strict=True))
        present = [n for n in per_class if n]
        ratio[split] = round(max(present) / min(present), 2) if present else None
        missing[split] = [name for name, n in counts[split].items() if not n]
    return {"counts": counts, "imbalance_ratio": ratio, "missing": missing}
