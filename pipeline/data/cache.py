"""The pixel cache (`pixel_cache`): decode every image once, before training, and keep its uint8 pixels.

They are kept in the datasets cache; every epoch then starts from pixels instead of JPEG bytes. Training images are
kept a little larger than the model's input (shorter side 8/7 of it, the 256-for-224 of ImageNet recipes) so that
random resized crops keep their detail; evaluation images are kept as the exact uint8 model input, so evaluation still
equals the processor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from pipeline.data.decode import decode_rgb
from pipeline.data.transforms import ImageSpec


class Shrink(torch.nn.Module):
    """Resize so that the shorter side is `size`, only when it is longer (never upsample)."""

    def __init__(self, size: int, interpolation: InterpolationMode):
        super().__init__()
        self.size, self.interpolation = size, interpolation

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if min(image.shape[-2:]) <= self.size:
            return image
        return TF.resize(image, self.size, interpolation=self.interpolation, antialias=True)


class _CacheWriter:
    """`Dataset.map` function: raw image cells in, uint8 HxWx3 pixel bytes and their shape out."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, batch: dict) -> dict:
        pixels, heights, widths, errors = [], [], [], []
        for item in batch["image"]:
            try:
                if item is None:
                    raise ValueError("empty cell")
                image = self.transform(decode_rgb(item)).permute(1, 2, 0).contiguous()
            except Exception as err:  # an unreadable image: recorded here, so this pass is also the image check
                pixels.append(b"")
                heights.append(0)
                widths.append(0)
                text = str(err).strip().splitlines()
                errors.append(f"{type(err).__name__}: {text[0] if text else ''}")
                continue
            pixels.append(image.numpy().tobytes())
            heights.append(image.shape[0])
            widths.append(image.shape[1])
            errors.append("")
        return {"pixels": pixels, "height": heights, "width": widths, "error": errors}


class CachedTransform:
    """A transform for `Dataset.with_transform` on a pixel cache: uint8 pixels in, the (random) uint8 steps, per row."""

    def __init__(self, transform: Callable | None = None):
        self.transform = transform

    def __call__(self, batch: dict) -> dict:
        out = []
        for data, height, width in zip(batch["pixels"], batch["height"], batch["width"], strict=True):
            image = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(height, width, 3).permute(2, 0, 1)
            out.append((self.transform(image) if self.transform is not None else image).contiguous())
        return {"pixel_values": out, "label": batch["label"]}


def cache_pixels(dataset, transform: Callable, num_proc: int | None = None, desc: str = "Caching pixels"):
    """Decode every image of `dataset` once and store `transform`'s uint8 output (columns pixels, height, width, label).

    `Dataset.map` writes the result to the datasets cache and finds it again on the next run with the same data and
    transform (its fingerprint). About 3 x height x width bytes per image. An unreadable image gets no pixels and
    its error in the `error` column (see `drop_unreadable`): the cache pass doubles as the image check.
    """
    import datasets

    if isinstance(dataset.features.get("image"), datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    features = datasets.Features({"pixels": datasets.Value("binary"), "height": datasets.Value("int32"),
                                  "width": datasets.Value("int32"), "error": datasets.Value("string"),
                                  "label": dataset.features["label"]})
    return dataset.map(_CacheWriter(transform), batched=True, batch_size=64, remove_columns=["image"],
                       features=features, num_proc=num_proc, desc=desc)


def cache_size(spec: ImageSpec) -> int:
    """Shorter side of cached training images: 8/7 of the model's input (256 px for 224 px)."""
    return -(-min(spec.output_size) * 8 // 7)


def drop_unreadable(cached, split: str, policy: str, skipped: dict[str, int] | None = None):
    """Apply `bad_images` to a pixel cache: stop naming the first unreadable row, or drop those rows and count them.

    Raises:
        PipelineError: with policy "error", naming the split, row and error of the first unreadable image.
    """
    from pipeline import PipelineError

    bad = np.flatnonzero(np.asarray(cached["height"][:]) == 0) if len(cached) else np.array([], dtype=int)
    if not len(bad):
        return cached
    first = int(bad[0])
    if policy == "error":
        raise PipelineError(f"unreadable image in split '{split}', row {first}: {cached[first]['error']}; "
                            f"{len(bad)} bad in all: fix or remove them, or set bad_images: skip")
    import logging

    logging.getLogger(__name__).warning("Skipping %d unreadable image(s) in split '%s' (first: row %d, %s)", len(bad),
                                        split, first, cached[first]["error"])
    if skipped is not None:
        skipped[split] = skipped.get(split, 0) + len(bad)
    return cached.select(np.setdiff1d(np.arange(len(cached)), bad))
