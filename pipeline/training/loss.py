"""The classification loss when the model's own cross-entropy is not enough: soft targets (MixUp / CutMix), label
smoothing and class weights, in one `torch.nn.functional.cross_entropy` call.

Backend-agnostic: `ClassificationLoss` is the Trainer's `compute_loss_func` and can be called by any loop as
`loss_fn(outputs, labels)`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def label_counts(dataset, num_labels: int) -> np.ndarray:
    """How many training rows each class has, read from the `label` column without decoding any image."""
    plain = dataset.with_format(None) if hasattr(dataset, "with_format") else dataset
    values = np.asarray(plain.select_columns(["label"])["label"][:], dtype=np.int64)
    return np.bincount(values, minlength=num_labels)


def balanced_class_weights(counts) -> torch.Tensor:
    """Weights `n / (classes * count)` (scikit-learn's "balanced"): a class twice as rare weighs twice as much."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


class ClassificationLoss:
    """Cross-entropy over logits for hard labels (class ids) or soft targets (rows of class probabilities).

    Args:
        class_weights: per-class weights (a tensor of num_labels), or None.
        label_smoothing: as in `F.cross_entropy` (and the Trainer's `label_smoothing_factor`).

    Called as `loss(outputs, labels, num_items_in_batch=None)`: with `num_items_in_batch` (the Trainer passes it
    when it accumulates gradients) the summed loss is divided by the number of samples in the whole accumulated
    batch; without it, the mean over this batch. Each sample's loss is weighted by its class weight (for soft
    targets, by the weights of the classes it mixes).
    """

    def __init__(self, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0):
        self.class_weights = class_weights
        self.label_smoothing = float(label_smoothing)

    def per_sample(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        """The loss of each sample (a tensor of batch size): what `__call__` averages or sums."""
        logits = outputs["logits"] if isinstance(outputs, dict) else getattr(outputs, "logits", outputs)
        logits = logits.float()
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        targets = labels.float() if labels.is_floating_point() else labels.long()
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.label_smoothing,
                               reduction="none")

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        per_sample = self.per_sample(outputs, labels)
        if num_items_in_batch is None:
            return per_sample.mean()
        # The Trainer counts label entries: for soft targets that is samples * classes.
        samples = num_items_in_batch / labels.shape[-1] if labels.ndim == 2 else num_items_in_batch
        return per_sample.sum() / samples


def build_loss(args, train_dataset, num_labels: int) -> ClassificationLoss | None:
    """The loss the training arguments ask for, or None when the model's own cross-entropy does the same.

    Needed for MixUp / CutMix (soft targets), label smoothing and class-weighted loss.
    """
    mixing = getattr(args, "mixup_alpha", 0.0) > 0 or getattr(args, "cutmix_alpha", 0.0) > 0
    smoothing = getattr(args, "label_smoothing_factor", 0.0) or 0.0
    weighted = getattr(args, "class_weighted_loss", False)
    if not (mixing or smoothing or weighted):
        return None
    weights = balanced_class_weights(label_counts(train_dataset, num_labels)) if weighted else None
    return ClassificationLoss(class_weights=weights, label_smoothing=smoothing)
