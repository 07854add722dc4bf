"""Whole batches from the pixel cache: the training loader's path when `pixel_cache` is on.

`CachedBatches` is a map-style dataset over a pixel cache (`cache.cache_pixels`) whose `__getitems__` (what PyTorch's
DataLoader calls with a batch of indices) returns the finished uint8 batch at once: the cached pixels are read as views
of the memory-mapped Arrow buffer (no copy, no per-row formatting by `datasets`), the random resized crops of the
whole batch are drawn in one vectorized pass (`crop_boxes`: torchvision's `RandomResizedCrop` rule, the same
distribution), each crop is resized by the uint8 kernel torchvision's resize calls, straight into the batch tensor, and
flipped in place when its draw says so. In the training process the batch's crops are split over one thread per core
(up to 4): the model waits while its batch is built, and the kernels release the GIL. Rescale and normalize stay where
they were, on the model's device (`transforms.PixelNormalizer` in the backends), so a loss hook still receives the
final normalized batch.

Per image that leaves one copy, one resize kernel and no Python transform objects, which is what lets the training
process do it between steps without a loader worker (on a 2-core machine a worker takes a core from the model's two
torch threads).
Extra per-image augmentation (`auto_augment`, `random_erasing`) keeps the per-row path (`cache.CachedTransform`).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

# torchvision's RandomResizedCrop default aspect-ratio range, and its number of tries before the center-crop fallback.
RATIO = (3 / 4, 4 / 3)
TRIES = 10


@dataclass
class BatchCrop:
    """The training augmentation of the batch path: torchvision's `RandomResizedCrop(size, scale=(scale_min, 1),
    interpolation, antialias=True)`, then `RandomHorizontalFlip()` when `flip`."""

    size: tuple[int, int]
    interpolation: InterpolationMode
    scale_min: float = 0.08
    flip: bool = True


def crop_boxes(heights: np.ndarray, widths: np.ndarray, scale: tuple[float, float], ratio: tuple[float, float] = RATIO,
               generator: torch.Generator | None = None) -> np.ndarray:
    """Random resized crop boxes for a batch of images, as rows of (top, left, height, width).

    The rule of torchvision's `RandomResizedCrop.make_params`, for every image at once: up to 10 tries of an area
    fraction uniform in `scale` and an aspect ratio log-uniform in `ratio`; the first try that fits is kept, at a
    uniform position; when none fits, the center crop of the largest box in the ratio range (or the whole image).
    Drawing all tries up front and keeping the first that fits gives each image the distribution of the sequential
    loop.
    """
    n = len(heights)
    heights, widths = np.asarray(heights, dtype=np.float64), np.asarray(widths, dtype=np.float64)
    draws = torch.rand((4, n, TRIES), generator=generator, dtype=torch.float64).numpy()
    area = heights[:, None] * widths[:, None] * (scale[0] + (scale[1] - scale[0]) * draws[0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_low + (log_high - log_low) * draws[1])
    # int(round(x)) of Python: round half to even, as numpy's rint.
    w = np.rint(np.sqrt(area * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(area / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= widths[:, None]) & (h > 0) & (h <= heights[:, None])
    found = fits.any(axis=1)
    first = fits.argmax(axis=1)
    rows = np.arange(n)
    w, h = w[rows, first], h[rows, first]
    # Uniform integer positions in [0, height - h] and [0, width - w], from the same try's draws.
    top = np.floor(draws[2][rows, first] * (heights - h + 1)).astype(np.int64)
    left = np.floor(draws[3][rows, first] * (widths - w + 1)).astype(np.int64)
    if not found.all():
        miss = ~found
        fh, fw = _fallback(heights[miss].astype(np.int64), widths[miss].astype(np.int64), ratio)
        h[miss], w[miss] = fh, fw
        top[miss], left[miss] = (heights[miss].astype(np.int64) - fh) // 2, (widths[miss].astype(np.int64) - fw) // 2
    return np.stack([top, left, h, w], axis=1)


def _fallback(heights: np.ndarray, widths: np.ndarray, ratio: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    # RandomResizedCrop's fallback: the whole image, cut to the nearest end of the ratio range.
    in_ratio = widths / heights
    low, high = min(ratio), max(ratio)
    h, w = heights.copy(), widths.copy()
    tall, wide = in_ratio < low, in_ratio > high
    h[tall] = np.rint(widths[tall] / low).astype(np.int64)
    w[wide] = np.rint(heights[wide] * high).astype(np.int64)
    return h, w


class CachedBatches(torch.utils.data.Dataset):
    """A pixel cache (columns pixels, height, width, label) as a map-style dataset that builds whole uint8 batches.

    `crop` None: the cached pixels are the model's exact input (the eval cache), stacked as they are. Otherwise each
    batch gets `crop`'s random resized crops and flips (`BatchCrop`). `__getitems__(indices)` returns the batch dict
    (`pixel_values` uint8 Bx3xHxW, `labels`), which `transforms.collate` passes through; `__getitem__` one row.
    """

    def __init__(self, cached, crop: BatchCrop | None = None):
        self.cached = cached.flatten_indices() if cached._indices is not None else cached
        self.crop = crop
        self._columns = None

    def __len__(self) -> int:
        return len(self.cached)

    def __getstate__(self) -> dict:
        # Loader workers get the dataset (memory-mapped files, pickled by path) and map the buffers again.
        return {**self.__dict__, "_columns": None}

    def with_format(self, *args, **kwargs):
        """The cache's rows as a `datasets.Dataset` (what reads the labels, such as class-weight counts, sees)."""
        return self.cached.with_format(*args, **kwargs)

    def _load(self) -> tuple:
        if self._columns is None:
            table = self.cached.data.table
            chunks = table.column("pixels").chunks
            buffers, starts, chunk_of, sizes = [], [], [], []
            for c, chunk in enumerate(chunks):
                offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
                buffers.append(np.frombuffer(chunk.buffers()[2], dtype=np.uint8))
                starts.append(offsets[:-1].astype(np.int64))
                sizes.append(np.diff(offsets).astype(np.int64))
                chunk_of.append(np.full(len(chunk), c, dtype=np.int64))
            heights = table.column("height").to_numpy().astype(np.int64)
            widths = table.column("width").to_numpy().astype(np.int64)
            labels = table.column("label").to_numpy(zero_copy_only=False)
            multi_hot = labels.dtype == object
            labels = torch.from_numpy(np.stack(labels).astype(np.float32) if multi_hot else labels.astype(np.int64))
            self._columns = (buffers, np.concatenate(starts) if starts else np.zeros(0, np.int64),
                             np.concatenate(chunk_of) if chunk_of else np.zeros(0, np.int64), heights, widths, labels)
        return self._columns

    def _pixels(self, index: int) -> torch.Tensor:
        # An HxWx3 uint8 view of the cached bytes: no copy (read-only: callers silence torch's warning about that).
        buffers, starts, chunk_of, heights, widths, _ = self._load()
        h, w, start = int(heights[index]), int(widths[index]), int(starts[index])
        return torch.from_numpy(buffers[chunk_of[index]][start:start + 3 * h * w]).view(h, w, 3)

    def _image(self, index: int) -> torch.Tensor:
        """Cached image `index` as a 3xHxW uint8 view (channels-last strides) of the cached bytes: no copy."""
        with _read_only():
            return self._pixels(index).permute(2, 0, 1)

    def __getitem__(self, index: int) -> dict:
        batch = self.__getitems__([index])
        return {"pixel_values": batch["pixel_values"][0], "label": batch["labels"][0]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        _, _, _, heights, widths, labels = self._load()
        index = np.asarray(indices, dtype=np.int64)
        with _read_only():
            images = [self._pixels(i) for i in index]
        crop = self.crop
        if crop is None:
            with one_thread():
                # Stacked as HxWx3 (plain copies of the cached bytes), then seen as a channels-last Bx3xHxW batch.
                pixels = torch.stack(images).permute(0, 3, 1, 2) if images else (
                    torch.zeros(0, 3, 1, 1, dtype=torch.uint8))
            return {"pixel_values": pixels, "labels": labels[index]}
        with one_thread():
            return {"pixel_values": self._augment(images, heights[index], widths[index]), "labels": labels[index]}

    def _augment(self, images: list[torch.Tensor], heights: np.ndarray, widths: np.ndarray) -> torch.Tensor:
        crop = self.crop
        # HxWx3 like the resize kernel's channels-last output, so each crop is written straight into the batch.
        out = torch.empty((len(images), *crop.size, 3), dtype=torch.uint8)
        boxes = crop_boxes(heights, widths, (crop.scale_min, 1.0)).tolist()
        flips = (torch.rand(len(images)) < 0.5).tolist() if crop.flip else [False] * len(images)
        parts = np.array_split(np.arange(len(images)), self._threads()) if len(images) else []
        jobs = [(out, images, boxes, flips, int(p[0]), int(p[-1]) + 1) for p in parts if len(p)]
        if len(jobs) > 1:
            # The model waits while its batch is built: the crops are split over the cores (the kernels release
            # the GIL), each thread on one torch thread.
            list(image_threads(len(jobs)).map(lambda job: _resize_crops(crop, *job), jobs))
        elif jobs:
            _resize_crops(crop, *jobs[0])
        return out.permute(0, 3, 1, 2)

    def _threads(self) -> int:
        # In a loader worker (a GPU host) the other workers hold the other cores; in the training process, all of them.
        from vit_pipeline.utils import cpu_count

        return 1 if torch.utils.data.get_worker_info() is not None else min(4, cpu_count())


def _resize_crops(crop: BatchCrop, out: torch.Tensor, images: list[torch.Tensor], boxes: list, flips: list[bool],
                  start: int, stop: int) -> None:
    """Crop and resize the HxWx3 images[start:stop] into out[start:stop] (BxHxWx3 uint8), each crop with
    torchvision's kernel, and flip those whose `flips` is set (one image at a time: an indexed flip of the
    channels-last batch took 7x as long)."""
    size = list(crop.size)
    kernel = _native_kernel(crop.interpolation)
    batch = out.permute(0, 3, 1, 2)  # Bx3xHxW, channels-last: each [k:k+1] is what the kernel writes
    for k in range(start, stop):
        top, left, h, w = boxes[k]
        # The crop copied to a contiguous HxWx3 block first: on a strided view the resize kernel takes a slower path
        # and returns planar pixels (measured 2x the time for the batch).
        region = images[k][top:top + h, left:left + w].contiguous().permute(2, 0, 1)
        if kernel is None:
            batch[k] = TF.resize_image(region, size, crop.interpolation)
        else:
            # torch's uint8 kernel that `TF.resize_image` calls for this mode (so the same pixels as
            # RandomResizedCrop's for the box), without its Python checks and the copy into the batch.
            kernel(region[None], size, False, out=batch[k:k + 1])
        if flips[k]:
            out[k] = out[k].flip(1)


def _native_kernel(mode: InterpolationMode):
    # The modes torchvision resizes as uint8 on this CPU (`_do_native_uint8_resize_on_cpu`), by these kernels.
    if mode == InterpolationMode.BICUBIC:
        return torch._C._nn._upsample_bicubic2d_aa
    if mode == InterpolationMode.BILINEAR and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        return torch._C._nn._upsample_bilinear2d_aa
    return None


_POOLS: dict[tuple[int, int], object] = {}


def image_threads(threads: int):
    """This process's pool of `threads` threads for per-image kernels (decoding, resizing), each on one torch thread
    (the images run side by side; a kernel split over torch's threads as well would oversubscribe the cores). Kept
    per process: a loader worker forked from this one does not inherit live threads."""
    key = (os.getpid(), threads)
    if key not in _POOLS:
        from concurrent.futures import ThreadPoolExecutor

        _POOLS[key] = ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,),
                                         thread_name_prefix="images")
    return _POOLS[key]


@contextlib.contextmanager
def _read_only():
    # The memory-mapped cache is read-only, and nothing here writes to it: torch's warning about that is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@contextlib.contextmanager
def one_thread():
    """Run the batch's many small kernels on one torch thread: split over threads that the model's steps keep busy
    (or that other processes hold), each kernel would wait at the thread pool's barrier longer than it computes."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
