"""One split ready for the loader, as the data arguments ask: per-image float transforms, the fast uint8 path, or
the pixel cache.

The fast path (`build_fast_transforms`, `fast_dataset`, optionally `cache.cache_pixels`) keeps images uint8 from
decoding to the device, where `transforms.PixelNormalizer` runs the float finish once per batch.
"""

from __future__ import annotations

from collections.abc import Callable

from vit_pipeline.config.arguments import DataArguments, default_data_args
from vit_pipeline.data.batches import BatchCrop, CachedBatches, image_threads
from vit_pipeline.data.cache import CachedTransform, Shrink, cache_pixels, cache_size, drop_unreadable
from vit_pipeline.data.decode import decode_rgb, to_rgb
from vit_pipeline.data.transforms import build_fast_transforms, build_transforms, image_spec
from vit_pipeline.utils import cpu_count


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


class DecodeTransform:
    """A transform for `Dataset.with_transform` on raw image cells: decode, then the uint8 steps, per row.

    Rows come out as `{"pixel_values": uint8 3xHxW, "label": int}`; `collate` stacks them into a uint8 batch. With
    `threads` > 1 the rows of a batch (the DataLoader fetches a batch's rows in one call) are decoded on that many
    threads of this process: libjpeg-turbo, libpng and the resize kernel release the GIL, so threads scale with the
    cores without a worker process's start-up or the hand-over of every batch between processes.
    """

    def __init__(self, transform: Callable, threads: int = 1):
        self.transform = transform
        self.threads = threads

    def _one(self, item):
        return self.transform(decode_rgb(item)).contiguous()

    def __call__(self, batch: dict) -> dict:
        items = batch["image"]
        if self.threads > 1 and len(items) > 1:
            pixels = list(image_threads(self.threads).map(self._one, items))
        else:
            pixels = [self._one(item) for item in items]
        return {"pixel_values": pixels, "label": batch["label"]}


def fast_dataset(dataset, transform: Callable, threads: int = 1):
    """The dataset with its images left encoded (`datasets.Image(decode=False)`) and decoded by `DecodeTransform`
    (on `threads` threads per batch).

    Decoding is then torchvision's (or PIL's for odd modes) in the loader workers, once per row and step, instead of
    PIL's in `datasets` followed by a copy into a tensor.
    """
    import datasets

    if isinstance(dataset.features.get("image"), datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return dataset.with_transform(DecodeTransform(transform, threads))


def prepare_dataset(dataset, image_processor, data_args: DataArguments | None = None, train: bool = True,
                    num_proc: int | None = None, skipped: dict[str, int] | None = None,
                    digests: dict[str, list[str]] | None = None):
    """One split as the data arguments ask (train or eval transforms), rows ready for `collate`.

    - `fast_transforms` (default): images stay encoded; workers decode and crop to uint8 (`fast_dataset`);
    - with `pixel_cache` too: images are decoded once now (`cache_pixels`), and epochs crop from the cached pixels,
      whole batches at once (`batches.CachedBatches`, a torch dataset: train with the crop and flip, eval as cached);
      that one pass is also the image check (`verify_images`), with `bad_images` applied and counts added to
      `skipped`, and the pixel digests of the kept rows put in `digests` under "train" or "eval";
    - `fast_transforms: false`: per-image float transforms on decoded PIL images (`BatchTransform`).

    Fast-path rows hold uint8 pixels: normalize their batches with `PixelNormalizer` (the Trainer backend does).
    """
    data_args = default_data_args() if data_args is None else data_args
    if not data_args.fast_transforms:
        transform = build_transforms(image_processor, data_args)[0 if train else 1]
        return dataset.with_transform(BatchTransform(transform))
    transform = build_fast_transforms(image_processor, data_args)[0 if train else 1]
    if not data_args.pixel_cache:
        return fast_dataset(dataset, transform)
    if num_proc is None and len(dataset) > 2000:
        # Decoding is the slow part of building the cache: use the cores (small sets are faster in-process).
        num_proc = min(16, cpu_count())
    spec = image_spec(image_processor)
    if train:
        cached = cache_pixels(dataset, Shrink(cache_size(spec), spec.interpolation), num_proc,
                              desc="Caching training pixels")
        cached = drop_unreadable(cached, "train", data_args.bad_images, skipped)
        if digests is not None:
            digests["train"] = cached["digest"][:]
        crop = batch_crop(spec, data_args)
        # Crop and flip only (the defaults): whole batches at once; other augmentation keeps its per-row steps.
        return CachedBatches(cached, crop) if crop is not None else cached.with_transform(CachedTransform(transform))
    # Evaluation is deterministic: cache the model's exact uint8 input, and read whole batches of it back as is.
    cached = cache_pixels(dataset, transform, num_proc, desc="Caching evaluation pixels")
    cached = drop_unreadable(cached, "eval", data_args.bad_images, skipped)
    if digests is not None:
        digests["eval"] = cached["digest"][:]
    return CachedBatches(cached)


def batch_crop(spec, data_args: DataArguments) -> BatchCrop | None:
    """The batch path's augmentation for these data arguments, or None when they ask for more than a random resized
    crop and a flip (a plain resize, `auto_augment`, `random_erasing`: those keep the per-row steps)."""
    if not data_args.random_resized_crop or data_args.auto_augment != "none" or data_args.random_erasing > 0:
        return None
    return BatchCrop(spec.output_size, spec.interpolation, data_args.crop_scale_min, data_args.horizontal_flip)


def prepare_datasets(train, evals, image_processor, data_args: DataArguments | None = None,
                     num_proc: int | None = None, skipped: dict[str, int] | None = None,
                     digests: dict[str, list[str]] | None = None):
    """The train and eval datasets as the data arguments ask (see `prepare_dataset`)."""
    return (prepare_dataset(train, image_processor, data_args, train=True, num_proc=num_proc, skipped=skipped,
                            digests=digests),
            prepare_dataset(evals, image_processor, data_args, train=False, num_proc=num_proc, skipped=skipped,
                            digests=digests))
