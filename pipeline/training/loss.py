"""The classification loss when the model's own cross-entropy is not enough: soft targets (MixUp / CutMix), label
smoothing and class weights, in one `torch.nn.functional.cross_entropy` call; for multi-label data, binary
cross-entropy with logits (`MultiLabelLoss`) with the same options.

Backend-agnostic: `ClassificationLoss` is the Trainer's `compute_loss_func` and can be called by any loop as
`loss_fn(outputs, labels)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from vit_pipeline.config.training_args import PipelineTrainingArguments


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


def float_logits(outputs) -> torch.Tensor:
    """The logits of a model output (a ModelOutput, a dict, or the tensor itself), in float32."""
    logits = outputs["logits"] if isinstance(outputs, dict) else getattr(outputs, "logits", outputs)
    return logits.float()


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
        logits = float_logits(outputs)
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        targets = labels.float() if labels.is_floating_point() else labels.long()
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.label_smoothing,
                               reduction="none")

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        return reduce_loss(self.per_sample(outputs, labels), labels, num_items_in_batch)


def reduce_loss(per_sample: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """The batch loss from each sample's: the mean, or (the Trainer accumulating gradients) the sum divided by the
    samples of the whole accumulated batch."""
    if num_items_in_batch is None:
        return per_sample.mean()
    # The Trainer counts label entries: for soft targets that is samples * classes.
    samples = num_items_in_batch / labels.shape[-1] if labels.ndim == 2 else num_items_in_batch
    return per_sample.sum() / samples


def positive_counts(dataset) -> tuple[np.ndarray, int]:
    """Multi-label: how many training rows are positive for each class, and how many rows there are."""
    plain = dataset.with_format(None) if hasattr(dataset, "with_format") else dataset
    values = plain.select_columns(["label"])["label"][:]
    matrix = np.asarray(values, dtype=np.float32).reshape(len(values), -1)
    return (matrix > 0.5).sum(0), len(values)


def positive_weights(positives, rows: int) -> torch.Tensor:
    """`pos_weight` of `BCEWithLogitsLoss`: negatives / positives per class (a class with 1 positive in 100 rows
    weighs its positives 99 times), as the PyTorch documentation suggests; a class with no positive gets 1."""
    positives = np.asarray(positives, dtype=np.float64)
    weights = np.where(positives > 0, (rows - positives) / np.maximum(positives, 1.0), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


class MultiLabelLoss(ClassificationLoss):
    """Binary cross-entropy with logits for multi-hot targets (hard 0/1 rows, or the soft rows MixUp / CutMix make).

    Args:
        pos_weight: per-class weight of the positive term (a tensor of num_labels), or None.
        label_smoothing: targets move towards 1/2 by this much, per class: `y * (1 - s) + s / 2` (binary label
            smoothing: each class is its own two-class problem).

    Called as `ClassificationLoss` is: the mean over classes is each sample's loss; with `num_items_in_batch`
    (the Trainer counts label entries, samples * classes) the summed loss is divided by the samples of the whole
    accumulated batch, so the result equals the model's own `BCEWithLogitsLoss` mean.
    """

    def __init__(self, pos_weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__(label_smoothing=label_smoothing)
        self.pos_weight = pos_weight

    def per_sample(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        """The loss of each sample (mean over its classes)."""
        logits = float_logits(outputs)
        targets = labels.float()
        if self.label_smoothing:
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / 2
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight,
                                                  reduction="none").mean(-1)


def plain_loss(multi_label: bool = False):
    """The loss the model computes itself: cross-entropy, or binary cross-entropy for multi-label."""
    return MultiLabelLoss() if multi_label else ClassificationLoss()


def build_loss(args: PipelineTrainingArguments, train_dataset, num_labels: int, multi_label: bool = False):
    """The loss the training arguments ask for, or None when the model's own loss does the same.

    Needed for MixUp / CutMix (soft targets), label smoothing and class-weighted loss. Multi-label
    (`multi_label`): always a `MultiLabelLoss` (with `pos_weight` from the class frequencies for
    class_weighted_loss). The model's own binary cross-entropy ignores the Trainer's `num_items_in_batch`, which the
    Trainer still multiplies by the number of processes: under DDP its loss and gradients come out that many times
    too large (transformers 5.24); `MultiLabelLoss` divides by the items of all processes, as the Trainer expects.
    """
    mixing = args.mixup_alpha > 0 or args.cutmix_alpha > 0
    smoothing = args.label_smoothing_factor or 0.0
    weighted = args.class_weighted_loss
    if multi_label:
        pos_weight = positive_weights(*positive_counts(train_dataset)) if weighted else None
        return MultiLabelLoss(pos_weight=pos_weight, label_smoothing=smoothing)
    if not (mixing or smoothing or weighted):
        return None
    weights = balanced_class_weights(label_counts(train_dataset, num_labels)) if weighted else None
    return ClassificationLoss(class_weights=weights, label_smoothing=smoothing)
