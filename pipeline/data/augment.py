"""Extra train-time augmentation, all from torchvision transforms v2: RandAugment / TrivialAugment and random erasing
per image, MixUp / CutMix per batch (in the collator, with soft targets for `training.loss.ClassificationLoss`).

Backend-agnostic: `build_transforms` appends the per-image steps; any loop can use `build_train_collator`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

if TYPE_CHECKING:
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.config.training_args import PipelineTrainingArguments


def image_steps(data_args: DataArguments, interpolation: InterpolationMode = InterpolationMode.BILINEAR) -> list:
    """Per-image steps on uint8 images, after cropping and flipping: the `auto_augment` policy, if any."""
    policy = data_args.auto_augment
    if policy == "randaugment":
        return [T.RandAugment(num_ops=data_args.rand_augment_num_ops, magnitude=data_args.rand_augment_magnitude,
                              interpolation=interpolation)]
    if policy == "trivialaugment":
        return [T.TrivialAugmentWide(interpolation=interpolation)]
    return []


def tensor_steps(data_args: DataArguments) -> list:
    """Per-image steps on the normalised float tensor: random erasing (as timm and torchvision's recipes do)."""
    probability = data_args.random_erasing
    return [T.RandomErasing(p=probability, value=0)] if probability > 0 else []


def describe(data_args: DataArguments) -> list[str]:
    """Human-readable names of the extra steps, for the model card."""
    names = []
    policy = data_args.auto_augment
    if policy == "randaugment":
        names.append(f"RandAugment ({data_args.rand_augment_num_ops} ops, "
                     f"magnitude {data_args.rand_augment_magnitude})")
    elif policy == "trivialaugment":
        names.append("TrivialAugment")
    if data_args.random_erasing > 0:
        names.append(f"random erasing (p {data_args.random_erasing:g})")
    return names


class MixingCollator:
    """Collate rows into a batch, then apply MixUp or CutMix to it (torchvision v2), turning labels into soft targets.

    A class rather than a closure so that DataLoader workers can pickle it.
    """

    def __init__(self, num_labels: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, base_collate=None):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("MixingCollator needs mixup_alpha or cutmix_alpha above 0")
        mixers = []
        if mixup_alpha > 0:
            mixers.append(T.MixUp(alpha=mixup_alpha, num_classes=num_labels))
        if cutmix_alpha > 0:
            mixers.append(T.CutMix(alpha=cutmix_alpha, num_classes=num_labels))
        # With both, each batch gets one of them, with even odds (timm's switch probability 0.5).
        self.mix = mixers[0] if len(mixers) == 1 else T.RandomChoice(mixers)
        if base_collate is None:
            from vit_pipeline.data.transforms import collate as base_collate
        self.base_collate = base_collate

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.base_collate(examples)
        pixel_values = batch["pixel_values"]
        if pixel_values.dtype == torch.uint8:
            # Fast-path batches stay uint8 until the backend normalizes them on the device: mix in float, then round
            # back (at most half a gray level off for MixUp; CutMix is exact).
            mixed, labels = self.mix(pixel_values.float(), batch["labels"])
            pixel_values = mixed.round_().clamp_(0, 255).to(torch.uint8)
        else:
            pixel_values, labels = self.mix(pixel_values, batch["labels"])
        return {**batch, "pixel_values": pixel_values, "labels": labels}


def build_train_collator(args: PipelineTrainingArguments, num_labels: int, base_collate=None):
    """The collator for training batches: MixUp / CutMix when the training arguments ask for it, else `base_collate`
    (default: `vit_pipeline.data.transforms.collate`). Evaluation batches always use the plain collator."""
    if args.mixup_alpha > 0 or args.cutmix_alpha > 0:
        return MixingCollator(num_labels, args.mixup_alpha, args.cutmix_alpha, base_collate=base_collate)
    if base_collate is None:
        from vit_pipeline.data.transforms import collate as base_collate
    return base_collate
