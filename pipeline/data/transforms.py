"""Image transforms built from the checkpoint's image processor, and the batch collator.

Size, mean, std and resampling come from the image processor saved with the checkpoint, so training sees what
`pipeline("image-classification")` will see. Transforms are torchvision v2 on uint8 tensors until the last
step (cheaper than float), applied lazily per row by `Dataset.with_transform` inside the DataLoader workers.

The fast path (`prepare_dataset`: `build_fast_transforms`, `fast_dataset`, optionally `cache_pixels`) keeps images
uint8 from decoding to the device, where `PixelNormalizer` runs the float finish once per batch.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from pipeline import PipelineError
from pipeline.config.arguments import DataArguments, default_data_args
from pipeline.utils import cpu_count

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
    """What the checkpoint's image processor asks for, in torchvision terms.

    Eval preprocessing is: resize, `pre_crop` (ConvNeXt's `crop_pct` crop), `crop`, then
    `((x * rescale + offset) - mean) / std`, and a second division by `std` when `std_again` (EfficientNet's
    `include_top`).
    """

    resize: tuple[int, int] | int  # (h, w), or the shortest edge
    crop: tuple[int, int] | None  # center crop after resizing, when the processor does one
    interpolation: InterpolationMode
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rescale: float
    normalize: bool
    pre_crop: tuple[int, int] | None = None  # ConvNeXt / ResNet: resize to shortest_edge / crop_pct, crop shortest_edge
    offset: float = 0.0  # EfficientNet's rescale_offset: x * rescale - 1
    std_again: bool = False  # EfficientNet's include_top: divide by std a second time

    @property
    def output_size(self) -> tuple[int, int]:
        """The (height, width) the model receives."""
        if self.crop is not None:
            return self.crop
        if self.pre_crop is not None:
            return self.pre_crop
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


# Processor classes whose preprocessing `image_spec` reproduces exactly (tests/data/test_model_families.py proves it on
# real photos): resize (square or shortest edge), ConvNeXt's crop_pct, center crop, rescale (EfficientNet's offset),
# normalize (EfficientNet's second division by std). The *Pil twins do the same steps.
KNOWN_PROCESSORS = ("ViTImageProcessor", "DeiTImageProcessor", "BeitImageProcessor", "BitImageProcessor",
                    "ConvNextImageProcessor", "EfficientNetImageProcessor", "CLIPImageProcessor")
_warned: set[str] = set()


def image_spec(image_processor) -> ImageSpec:
    """Read size, crop, resampling, mean and std from an image processor (never hard-coded).

    Follows each family's own rule: ConvNeXt and ResNet (`ConvNextImageProcessor`) resize the shortest edge to
    `shortest_edge / crop_pct` and crop `shortest_edge` below 384 px, and warp to a square from 384 px up;
    EfficientNet may rescale to [-1, 1] (`rescale_offset`) and divide by std twice (`include_top`).
    """
    name = type(image_processor).__name__.removesuffix("Pil")
    if name not in KNOWN_PROCESSORS and name not in _warned:
        _warned.add(name)
        import logging

        logging.getLogger("pipeline").warning(
            "%s: training and evaluation preprocessing is rebuilt from its size, crop, mean and std only (steps of "
            "its own are not reproduced, with or without fast_transforms)", name)
    resize = _size_of(getattr(image_processor, "size", None))
    if resize is None:
        raise ValueError(f"image processor {type(image_processor).__name__} has no usable size: {image_processor.size}")
    crop_pct = getattr(image_processor, "crop_pct", None) if name == "ConvNextImageProcessor" else None
    pre_crop = None
    if crop_pct is not None and isinstance(resize, int):
        if resize < 384:
            # ConvNextImageProcessor.resize: shortest edge to int(shortest_edge / crop_pct), then crop shortest_edge.
            resize, pre_crop = int(resize / crop_pct), (resize, resize)
        else:
            resize = (resize, resize)  # warped, no crop, from 384 px up
    crop = _size_of(getattr(image_processor, "crop_size", None)) if getattr(
        image_processor, "do_center_crop", False) else None
    if isinstance(crop, int):
        crop = (crop, crop)
    resample = getattr(image_processor, "resample", Image.Resampling.BILINEAR)
    interpolation = _INTERPOLATION.get(resample, resample if isinstance(resample, InterpolationMode) else
                                       InterpolationMode.BILINEAR)
    do_rescale = getattr(image_processor, "do_rescale", True)
    return ImageSpec(
        resize=resize,
        crop=crop,
        interpolation=interpolation,
        mean=tuple(image_processor.image_mean),
        std=tuple(image_processor.image_std),
        # A processor that does not rescale divides by nothing: its mean and std are in 0..255 units.
        rescale=float(getattr(image_processor, "rescale_factor", 1 / 255)) if do_rescale else 1.0,
        normalize=bool(getattr(image_processor, "do_normalize", True)),
        pre_crop=pre_crop,
        offset=-1.0 if do_rescale and getattr(image_processor, "rescale_offset", False) else 0.0,
        std_again=bool(getattr(image_processor, "include_top", False)),
    )


class Rescale(torch.nn.Module):
    """Multiply by the processor's rescale factor (a module, not a lambda, so DataLoader workers can pickle it)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.to(torch.float32) * self.factor


class ProcessorCenterCrop(torch.nn.Module):
    """Center crop with the image processors' rounding (offsets rounded down; torchvision's `CenterCrop` rounds half
    to even, one pixel off whenever the margin is odd), padding with zeros as they do when the image is smaller."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        crop_h, crop_w = self.size
        height, width = image.shape[-2:]
        if crop_h > height or crop_w > width:
            pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
            image = TF.pad(image, [pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2], fill=0)
            height, width = image.shape[-2:]
        return TF.crop(image, int((height - crop_h) / 2.0), int((width - crop_w) / 2.0), crop_h, crop_w)


class Finish(torch.nn.Module):
    """The image processor's float end on uint8 or float pixels: rescale (+ offset), normalize (and EfficientNet's
    second division by std), in the order and fusion transformers' torchvision processors use, so results are equal.

    Fused like those processors: without an offset, mean and std are divided by the rescale factor and one
    `normalize` does both steps.
    """

    def __init__(self, spec: ImageSpec):
        super().__init__()
        self.spec = spec
        fused = spec.normalize and not spec.offset
        scale = 1.0 / spec.rescale if fused else 1.0
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32) * scale, persistent=False)
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32) * scale, persistent=False)
        self.register_buffer("std_again", torch.tensor(spec.std, dtype=torch.float32), persistent=False)
        self.fused = fused

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        device = pixels.device
        pixels = pixels.to(torch.float32, copy=True)
        if not self.fused:
            pixels = pixels * spec.rescale
            if spec.offset:
                pixels -= -spec.offset
        if spec.normalize:
            pixels = TF.normalize(pixels, self.mean.to(device), self.std.to(device), inplace=True)
        if spec.std_again:
            pixels = TF.normalize(pixels, [0.0] * len(spec.std), self.std_again.to(device), inplace=True)
        return pixels


def _finish(spec: ImageSpec) -> list:
    return [Finish(spec)]


def _resize_steps(spec: ImageSpec) -> list:
    steps: list = [T.Resize(spec.resize, interpolation=spec.interpolation, antialias=True)]
    if spec.pre_crop is not None:
        steps.append(ProcessorCenterCrop(spec.pre_crop))
    if spec.crop is not None:
        steps.append(ProcessorCenterCrop(spec.crop))
    return steps


def build_transforms(image_processor, data_args: DataArguments | None = None) -> tuple[Callable, Callable]:
    """Build the train and eval transforms for one image.

    Train: random resized crop (or a plain resize) and horizontal flip, each switchable in `data_args` (None: the
    defaults of `DataArguments`).
    Eval: exactly the image processor's steps (resize, center crop if it has one, rescale, normalize).

    Returns:
        (train_transform, eval_transform), each taking a PIL image and returning a float CHW tensor.
    """
    spec = image_spec(image_processor)
    eval_steps: list = [T.ToImage(), *_resize_steps(spec)]
    eval_transform = T.Compose(eval_steps + _finish(spec))

    data_args = default_data_args() if data_args is None else data_args
    train_steps: list = [T.ToImage()]
    if data_args.random_resized_crop:
        train_steps.append(T.RandomResizedCrop(spec.output_size, scale=(data_args.crop_scale_min, 1.0),
                                               interpolation=spec.interpolation, antialias=True))
    else:
        train_steps += eval_steps[1:]
    if data_args.horizontal_flip:
        train_steps.append(T.RandomHorizontalFlip())
    # Extra augmentation asked for in data_args (RandAugment / TrivialAugment on uint8, random erasing at the end).
    from pipeline.data.augment import image_steps, tensor_steps

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
    """Stack transformed rows into the batch `ViTForImageClassification` takes.

    Labels are class ids (int64), or for multi-label rows (lists of 0/1) a float32 multi-hot matrix, which is what
    the model's binary cross-entropy takes.
    """
    labels = [e["label"] for e in examples]
    multi_hot = bool(labels) and isinstance(labels[0], (list, tuple))
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor(labels, dtype=torch.float32 if multi_hot else torch.long),
    }


# The fast path (`fast_transforms`, the default). The loader workers only decode each image and bring it to the model's
# input size as uint8 (the augmentation steps of `build_transforms`, on a small uint8 image); the collator stacks uint8;
# rescale and normalize, the float part, run on whole batches on the model's device (`PixelNormalizer`), the way the
# image processor ends. Per image that is a quarter of the bytes to move between processes and to the GPU, and no
# float work in the workers.

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's SOF marker, without decoding; None when not found."""
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(_JPEG_SIGNATURE):
        i = 2
        while i + 9 < len(data) and data[i] == 0xFF:
            marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + length
    return None


def _check_pixels(data: bytes) -> None:
    # torchvision's decoders allocate what the header claims before reading a pixel: refuse a decompression bomb
    # (PIL's own limit) before either decoder sees it. The image check (verify_images) reports such files earlier.
    size, limit = _header_size(data), Image.MAX_IMAGE_PIXELS
    if size and limit and size[0] * size[1] > 2 * limit:
        raise PipelineError(f"an image claims {size[0]} x {size[1]} pixels, over PIL's limit of "
                            f"{2 * limit} (a decompression bomb?): remove it, or keep verify_images: "
                            "true with bad_images: skip to drop such files")


def _torchvision_decodable(data: bytes) -> bool:
    """Whether torchvision's decoders give exactly what `to_rgb` would: 8-bit gray or RGB JPEG / PNG, no alpha.

    Alpha (composited on white), palettes, 16-bit and CMYK images go through PIL and `to_rgb` instead; they are rare
    in photo datasets, and PIL's conversions are the reference the fast path must match.
    """
    if data.startswith(_JPEG_SIGNATURE):
        return True  # gray or YCbCr/RGB; CMYK shows up as 4 channels after decoding and is sent back to PIL
    if data.startswith(_PNG_SIGNATURE) and len(data) > 26:
        bit_depth, color_type = data[24], data[25]
        idat = data.find(b"IDAT")
        # Color types 0 (gray) and 2 (RGB), 8 bits, and no tRNS chunk (transparency) before the pixel data.
        return bit_depth == 8 and color_type in (0, 2) and b"tRNS" not in data[: idat if idat > 0 else None]
    return False


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    # A 3xHxW view of the HxWx3 array: torch's uint8 resize kernels are fastest on this channels-last layout.
    return torch.from_numpy(np.array(to_rgb(image), dtype=np.uint8, copy=True)).permute(2, 0, 1)


def decode_rgb(item) -> torch.Tensor:
    """Decode one image cell to a 3xHxW uint8 RGB tensor, with the same pixels as `to_rgb` on the PIL image.

    Args:
        item: a raw `datasets.Image(decode=False)` cell (`{"bytes": ..., "path": ...}`), encoded bytes, a file path,
            a PIL image or an HxW / HxWxC uint8 array.

    Plain JPEG and PNG photos are decoded by torchvision (libjpeg-turbo / libpng: the same pixels as PIL, without
    PIL's copies), with their EXIF orientation applied as `datasets` and `pipeline()` do; every other mode goes through
    PIL and `to_rgb` (alpha on white, 16-bit scaled, CMYK and palettes converted).
    """
    if isinstance(item, dict):
        data = item.get("bytes")
        if data is None:
            with open(item["path"], "rb") as file:
                data = file.read()
        item = data
    elif isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as file:
            item = file.read()
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        _check_pixels(data)
        if _torchvision_decodable(data):
            try:
                image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                     mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
            except RuntimeError:
                image = None  # a file libjpeg/libpng reject may still open in PIL (truncated, odd markers)
            if image is not None and image.dtype == torch.uint8 and image.shape[0] in (1, 3):
                return image.expand(3, -1, -1) if image.shape[0] == 1 else image
        with Image.open(io.BytesIO(data)) as opened:
            # datasets and transformers' load_image apply the EXIF orientation; so does the fast path.
            image = ImageOps.exif_transpose(opened) if opened.getexif().get(0x0112) else opened
            image.load()
            return _pil_to_tensor(image)
    if isinstance(item, Image.Image):
        return _pil_to_tensor(item)
    array = np.asarray(item)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        return _pil_to_tensor(Image.fromarray(np.squeeze(array)))
    return _pil_to_tensor(Image.fromarray(array if array.shape[2] != 1 else array[:, :, 0]))


def _uint8_steps(transform: T.Compose) -> T.Compose:
    # The steps of a `build_transforms` transform that work on pixels, without the conversion to a tensor and the
    # float finish: augmentations added there apply to the fast path as well.
    return T.Compose([t for t in transform.transforms if not isinstance(t, (T.ToImage, Rescale, T.Normalize, Finish))])


def build_fast_transforms(image_processor, data_args: DataArguments | None = None) -> tuple[Callable, Callable]:
    """Build the fast path's train and eval transforms: uint8 3xHxW tensor in, uint8 tensor at the model's size out.

    They are `build_transforms`'s steps (same crop, resize, flip and any other augmentation, from the same image
    processor and `data_args`) without the float finish, which `PixelNormalizer` runs on whole batches.

    Returns:
        (train_transform, eval_transform).
    """
    train_transform, eval_transform = build_transforms(image_processor, data_args)
    return _uint8_steps(train_transform), _uint8_steps(eval_transform)


class DecodeTransform:
    """A transform for `Dataset.with_transform` on raw image cells: decode, then the uint8 steps, per row.

    Rows come out as `{"pixel_values": uint8 3xHxW, "label": int}`; `collate` stacks them into a uint8 batch.
    """

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, batch: dict) -> dict:
        return {
            "pixel_values": [self.transform(decode_rgb(item)).contiguous() for item in batch["image"]],
            "label": batch["label"],
        }


def fast_dataset(dataset, transform: Callable):
    """The dataset with its images left encoded (`datasets.Image(decode=False)`) and decoded by `DecodeTransform`.

    Decoding is then torchvision's (or PIL's for odd modes) in the loader workers, once per row and step, instead of
    PIL's in `datasets` followed by a copy into a tensor.
    """
    import datasets

    if isinstance(dataset.features.get("image"), datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return dataset.with_transform(DecodeTransform(transform))


class PixelNormalizer(torch.nn.Module):
    """uint8 batches (Bx3xHxW) in, the image processor's float `pixel_values` out, on the batch's device.

    The float end is `Finish`: rescale and normalize fused the way transformers' torchvision image processors fuse
    them, so eval batches equal the saved processor's output.
    """

    def __init__(self, spec: ImageSpec):
        super().__init__()
        self.spec = spec
        self.finish = Finish(spec)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dtype != torch.uint8:
            return pixel_values  # already finished (the per-image path)
        return self.finish(pixel_values)


# The pixel cache (`pixel_cache`): decode every image once, before training, and keep its uint8 pixels in the datasets
# cache; every epoch then starts from pixels instead of JPEG bytes. Training images are kept a little larger than the
# model's input (shorter side 8/7 of it, the 256-for-224 of ImageNet recipes) so that random resized crops keep
# their detail; evaluation images are kept as the exact uint8 model input, so evaluation still equals the processor.


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


def prepare_dataset(dataset, image_processor, data_args: DataArguments | None = None, train: bool = True,
                    num_proc: int | None = None, skipped: dict[str, int] | None = None):
    """One split as the data arguments ask (train or eval transforms), rows ready for `collate`.

    - `fast_transforms` (default): images stay encoded; workers decode and crop to uint8 (`fast_dataset`);
    - with `pixel_cache` too: images are decoded once now (`cache_pixels`), and epochs crop from the cached pixels;
      that one pass is also the image check (`verify_images`), with `bad_images` applied and counts added to
      `skipped`;
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
        return cached.with_transform(CachedTransform(transform))
    # Evaluation is deterministic: cache the model's exact uint8 input, and read it back as is.
    cached = cache_pixels(dataset, transform, num_proc, desc="Caching evaluation pixels")
    cached = drop_unreadable(cached, "eval", data_args.bad_images, skipped)
    return cached.with_transform(CachedTransform())


def prepare_datasets(train, evals, image_processor, data_args: DataArguments | None = None,
                     num_proc: int | None = None, skipped: dict[str, int] | None = None):
    """The train and eval datasets as the data arguments ask (see `prepare_dataset`)."""
    return (prepare_dataset(train, image_processor, data_args, train=True, num_proc=num_proc, skipped=skipped),
            prepare_dataset(evals, image_processor, data_args, train=False, num_proc=num_proc, skipped=skipped))
