"""Multi-label loss: the model's own binary cross-entropy, pos_weight from class frequencies, binary label smoothing,
the Trainer's accumulated-batch normalisation, and MixUp / CutMix on multi-hot targets."""

from __future__ import annotations

import datasets
import pytest
import torch
import torch.nn.functional as F

from vit_pipeline.data.augment import MixingCollator
from vit_pipeline.training.loss import MultiLabelLoss, build_loss, plain_loss, positive_counts, positive_weights


class Args:
    mixup_alpha = cutmix_alpha = 0.0
    label_smoothing_factor = 0.0
    class_weighted_loss = False


def batch(seed=0):
    torch.manual_seed(seed)
    logits = torch.randn(6, 3)
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.float32)
    return logits, labels


def test_plain_loss_is_the_models_own_bce():
    logits, labels = batch()
    assert plain_loss(True)({"logits": logits}, labels) == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, labels).item())
    # The Trainer counts label entries (samples x classes) over an accumulated batch of 12 samples.
    assert MultiLabelLoss()({"logits": logits}, labels, num_items_in_batch=torch.tensor(36)) == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, labels, reduction="sum").item() / 36)


def test_pos_weight_from_class_frequencies_and_label_smoothing():
    ds = datasets.Dataset.from_dict({"label": [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]})
    positives, rows = positive_counts(ds)
    assert positives.tolist() == [3, 1, 0] and rows == 4
    weights = positive_weights(positives, rows)
    assert weights.tolist() == pytest.approx([1 / 3, 3.0, 1.0])
    args = Args()
    args.class_weighted_loss, args.label_smoothing_factor = True, 0.1
    loss = build_loss(args, ds, 3, multi_label=True)
    logits, labels = batch()
    expected = F.binary_cross_entropy_with_logits(logits, labels * 0.9 + 0.05, pos_weight=weights)
    assert loss({"logits": logits}, labels) == pytest.approx(expected.item())
    # Always ours for multi-label: the model's own BCE ignores num_items_in_batch (wrong scale under DDP).
    plain = build_loss(Args(), ds, 3, multi_label=True)
    assert isinstance(plain, MultiLabelLoss) and plain.pos_weight is None and plain.label_smoothing == 0


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixing_keeps_multi_hot_targets_mixed(mix):
    _, labels = batch()
    collator = MixingCollator(3, mixup_alpha=0.8 if mix == "mixup" else 0.0, cutmix_alpha=1.0 if mix == "cutmix"
                              else 0.0, base_collate=lambda rows: {"pixel_values": torch.rand(6, 3, 8, 8),
                                                                  "labels": labels})
    torch.manual_seed(1)
    out = collator([{}] * 6)["labels"]
    assert out.shape == (6, 3) and out.dtype == torch.float32
    # Each row is lam * its own targets + (1 - lam) * the previous row's: the same lam for every row and class.
    lam = None
    for i in range(6):
        own, other = labels[i], labels[i - 1]
        differs = own != other
        if differs.any():
            j = int(differs.nonzero()[0])
            row_lam = float((out[i, j] - other[j]) / (own[j] - other[j]))
            lam = row_lam if lam is None else lam
            assert row_lam == pytest.approx(lam, abs=1e-6)
        torch.testing.assert_close(out[i], lam * own + (1 - lam) * other if lam is not None else own)
