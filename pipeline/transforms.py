"""Image transforms built from the checkpoint's image processor, and the batch collator.

Size, mean, std and resampling come from the image processor saved with the checkpoint, so training sees what
`pipeline("image-classification")` will see. Transforms are torchvision v2 on uint8 tensors until the last
step (cheaper than float), applied lazily per row by `Dataset.with_transform` inside the DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

# PIL resample codes (what image processors store) -> torchvision modes.
_INTERPOLATION = {
    Image.Resampling.NEAREST: InterpolationMode.NEAREST,
    Image.Resampling.BILINEAR: InterpolationMode.BILINEAR,
    Image.Resampling.BICUBIC: InterpolationMode.BICUBIC,
    Image.Resampling.LANCZOS: InterpolationMode.LANCZOS,
    Image.Resampling.BOX: InterpolationMode.BOX,
    Image.Resampling.HAMMING: InterpolationMode.HAMMING,
}


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparent images are put on white (what a viewer shows); 16-bit and 32-bit images are scaled to 8 bits
    rather than clipped (a plain `convert("RGB")` turns most 16-bit images white).
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" and array.max() <= 1.0 else (255.0 if array.max() <= 255 else 65535.0)
        array = np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass
class ImageSpec:
    """What the checkpoint's image processor asks for, in torchvision terms."""

    resize: tuple[int, int] | int  # (h, w), or the shortest edge
    crop: tuple[int, int] | None  # center crop after resizing, when the processor does one
    interpolation: InterpolationMode
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rescale: float
    normalize: bool

    @property
    def output_size(self) -> tuple[int, int]:
        """The (height, width) the model receives."""
        if self.crop is not None:
            return self.crop
        return self.resize if isinstance(self.resize, tuple) else (self.resize, self.resize)


def _size_of(size) -> tuple[int, int] | int | None:
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    if get("height") and get("width"):
        return (int(get("height")), int(get("width")))
    if get("shortest_edge"):
        return int(get("shortest_edge"))
    return None


def image_spec(image_processor) -> ImageSpec:
    """Read size, crop, resampling, mean and std from an image processor (never hard-coded)."""
    resize = _size_of(getattr(image_processor, "size", None))
    if resize is None:
        raise ValueError(f"image processor {type(image_processor).__name__} has no usable size: {image_processor.size}")
    crop = _size_of(getattr(image_processor, "crop_size", None)) if getattr(
        image_processor, "do_center_crop", False) else None
    if isinstance(crop, int):
        crop = (crop, crop)
    resample = getattr(image_processor, "resample", Image.Resampling.BILINEAR)
    interpolation = _INTERPOLATION.get(resample, resample if isinstance(resample, InterpolationMode) else
                                       InterpolationMode.BILINEAR)
    return ImageSpec(
        resize=resize,
        crop=crop,
        interpolation=interpolation,
        mean=tuple(image_processor.image_mean),
        std=tuple(image_processor.image_std),
        rescale=float(getattr(image_processor, "rescale_factor", 1 / 255)),
        normalize=bool(getattr(image_processor, "do_normalize", True)),
    )


class Rescale(torch.nn.Module):
    """Multiply by the processor's rescale factor (a module, not a lambda, so DataLoader workers can pickle it)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.to(torch.float32) * self.factor


def _finish(spec: ImageSpec) -> list:
    steps: list = [Rescale(spec.rescale)]
    if spec.normalize:
        steps.append(T.Normalize(mean=spec.mean, std=spec.std))
    return steps


def build_transforms(image_processor, data_args=None) -> tuple[Callable, Callable]:
    """Build the train and eval transforms for one image.

    Train: random resized crop (or a plain resize) and horizontal flip, each switchable in `data_args`.
    Eval: exactly the image processor's steps (resize, center crop if it has one, rescale, normalize).

    Returns:
        (train_transform, eval_transform), each taking a PIL image and returning a float CHW tensor.
    """
    spec = image_spec(image_processor)
    eval_steps: list = [T.ToImage(), T.Resize(spec.resize, interpolation=spec.interpolation, antialias=True)]
    if spec.crop is not None:
        eval_steps.append(T.CenterCrop(spec.crop))
    eval_transform = T.Compose(eval_steps + _finish(spec))

    crop_scale_min = getattr(data_args, "crop_scale_min", 0.08)
    train_steps: list = [T.ToImage()]
    if data_args is None or data_args.random_resized_crop:
        train_steps.append(T.RandomResizedCrop(spec.output_size, scale=(crop_scale_min, 1.0),
                                               interpolation=spec.interpolation, antialias=True))
    else:
        train_steps += eval_steps[1:]
    if data_args is None or data_args.horizontal_flip:
        train_steps.append(T.RandomHorizontalFlip())
    # Extra augmentation asked for in data_args (RandAugment / TrivialAugment on uint8, random erasing at the end).
    from pipeline.augment import image_steps, tensor_steps

    train_steps += image_steps(data_args, spec.interpolation)
    train_transform = T.Compose(train_steps + _finish(spec) + tensor_steps(data_args))
    return train_transform, eval_transform


class BatchTransform:
    """A per-image transform for `Dataset.with_transform`: decoded PIL images in, `pixel_values` out.

    A class rather than a closure so that datasets can pickle it into DataLoader workers.
    """

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, batch: dict) -> dict:
        return {
            "pixel_values": [self.transform(to_rgb(image)) for image in batch["image"]],
            "label": batch["label"],
        }


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack transformed rows into the batch `ViTForImageClassification` takes."""
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["label"] for e in examples], dtype=torch.long),
    }
