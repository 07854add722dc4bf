"""The pixel cache (`pixel_cache`): decode every image once, before training, and keep its uint8 pixels.

They are kept in the datasets cache; every epoch then starts from pixels instead of JPEG bytes. Training images are
kept a little larger than the model's input (shorter side 8/7 of it, the 256-for-224 of ImageNet recipes) so that
random resized crops keep their detail; evaluation images are kept as the exact uint8 model input, so evaluation still
equals the processor.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from vit_pipeline.data.decode import decode_rgb
from vit_pipeline.data.duplicates import pixel_digest
from vit_pipeline.data.fingerprint import pass_fingerprint
from vit_pipeline.data.transforms import ImageSpec

logger = logging.getLogger(__name__)

# `pixel_cache` unset: the most disk the cache may take on its own (and never over a quarter of what is free).
AUTO_CACHE_MAX_BYTES = 10 * 2**30


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
    """`Dataset.map` function: raw image cells in, uint8 HxWx3 pixel bytes, their shape and the digest of the decoded
    pixels out (before the transform: train and eval images are cached at different sizes, their digests compare)."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, batch: dict) -> dict:
        pixels, heights, widths, errors, digests = [], [], [], [], []
        for item in batch["image"]:
            try:
                if item is None:
                    raise ValueError("empty cell")
                decoded = decode_rgb(item).contiguous()
                digest = pixel_digest(decoded.numpy(), tuple(decoded.shape))
                image = self.transform(decoded).permute(1, 2, 0).contiguous()
            except Exception as err:  # an unreadable image: recorded here, so this pass is also the image check
                pixels.append(b"")
                heights.append(0)
                widths.append(0)
                digests.append("")
                text = str(err).strip().splitlines()
                errors.append(f"{type(err).__name__}: {text[0] if text else ''}")
                continue
            pixels.append(image.numpy().tobytes())
            heights.append(image.shape[0])
            widths.append(image.shape[1])
            errors.append("")
            digests.append(digest)
        return {"pixels": pixels, "height": heights, "width": widths, "error": errors, "digest": digests}


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
    """Decode every image of `dataset` once and store `transform`'s uint8 output (columns pixels, height, width, label,
    and the digest of the decoded pixels, `duplicates.pixel_digest`).

    `Dataset.map` writes the result to the datasets cache and finds it again on the next run with the same data and
    transform, and the same version of this package's data code (`fingerprint.pass_fingerprint`). About 3 x height x
    width bytes per image. An unreadable image gets no pixels and its error in the `error` column (see
    `drop_unreadable`): the cache pass doubles as the image check.
    """
    import datasets

    if isinstance(dataset.features.get("image"), datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    features = datasets.Features({"pixels": datasets.Value("binary"), "height": datasets.Value("int32"),
                                  "width": datasets.Value("int32"), "error": datasets.Value("string"),
                                  "digest": datasets.Value("string"), "label": dataset.features["label"]})
    writer = _CacheWriter(transform)
    return dataset.map(writer, batched=True, batch_size=64, remove_columns=["image"], features=features,
                       num_proc=num_proc, desc=desc,
                       new_fingerprint=pass_fingerprint(dataset, writer, batch_size=64, features=features))


def cache_size(spec: ImageSpec) -> int:
    """Shorter side of cached training images: 8/7 of the model's input (256 px for 224 px)."""
    return -(-min(spec.output_size) * 8 // 7)


def cache_bytes(spec: ImageSpec, train_rows: int, eval_rows: int) -> int:
    """About how much disk the pixel cache of both splits takes: training images at `cache_size` on their shorter
    side (counted as 4:3 photos), eval images as the exact model input."""
    side = cache_size(spec)
    height, width = spec.output_size
    return 3 * (train_rows * side * side * 4 // 3 + eval_rows * height * width)


def _cache_folder(dataset) -> str:
    import datasets

    files = dataset.cache_files
    return os.path.dirname(files[0]["filename"]) if files else str(datasets.config.HF_DATASETS_CACHE)


def choose_pixel_cache(data_args, spec: ImageSpec, train, evals, epochs: float) -> tuple[bool, str]:
    """Whether to build the pixel cache, and why in words.

    `pixel_cache: true / false` is kept as set. Unset, the cache is built when it pays and fits: the fast transforms
    on map-style data, every training image read at least twice (`epochs` >= 2: the cache pass costs about one
    epoch of decoding), and the cache at most `AUTO_CACHE_MAX_BYTES` and a quarter of the free disk where datasets
    keeps it.
    """
    if data_args.pixel_cache is not None:
        return data_args.pixel_cache, "set in the recipe"
    if data_args.streaming or not data_args.fast_transforms:
        return False, "streaming" if data_args.streaming else "fast_transforms is false"
    if epochs < 2:
        return False, f"each training image is read {epochs:.1f} times (the cache pays from 2 epochs)"
    folder = _cache_folder(train)
    need = cache_bytes(spec, len(train), len(evals))
    existing = folder
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)  # the cache folder may not exist yet: the disk it will be on
    free = shutil.disk_usage(existing).free
    if need > min(AUTO_CACHE_MAX_BYTES, free // 4):
        return False, (f"it would take about {need / 2**30:.1f} GiB of {free / 2**30:.1f} GiB free in {folder} "
                       f"(at most {AUTO_CACHE_MAX_BYTES / 2**30:.0f} GiB and a quarter of the free disk)")
    return True, (f"{epochs:.0f} epochs over {len(train):,} images, about {need / 2**20:,.0f} MiB in {folder}; "
                  "pixel_cache: false decodes every epoch instead")


@dataclasses.dataclass
class CacheDecision:
    """What decides an unset `pixel_cache` once the splits are loaded: the model's input, and how many times the run
    reads each training image (a function of the number of training rows)."""

    spec: ImageSpec
    epochs: Callable[[int], float]


def decide_pixel_cache(data_args, train, evals, decision: CacheDecision | None):
    """The data arguments with an unset `pixel_cache` decided (`choose_pixel_cache`) and the decision logged; as
    they are when it is set, or when there is no `decision` (commands that do not train)."""
    if data_args.pixel_cache is not None or decision is None:
        return data_args
    use, why = choose_pixel_cache(data_args, decision.spec, train, evals, decision.epochs(len(train)))
    logger.info("Pixel cache %s: %s", "on" if use else "off", why)
    return dataclasses.replace(data_args, pixel_cache=use)


def drop_unreadable(cached, split: str, policy: str, skipped: dict[str, int] | None = None):
    """Apply `bad_images` to a pixel cache: stop naming the first unreadable row, or drop those rows and count them.

    Raises:
        PipelineError: with policy "error", naming the split, row and error of the first unreadable image.
    """
    from vit_pipeline import PipelineError

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
