"""Image transforms built from the checkpoint's image processor, the batch collator and the batch normalizer.

Size, mean, std and resampling come from the image processor saved with the checkpoint, so training sees what
`pipeline("image-classification")` will see. Transforms are torchvision v2 on uint8 tensors until the last
step (cheaper than float), applied lazily per row by `Dataset.with_transform` inside the DataLoader workers
(`vit_pipeline.data.prepare`). On the fast path, images stay uint8 up to the device, where `PixelNormalizer` runs the
float finish once per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from vit_pipeline.config.arguments import DataArguments, default_data_args

# PIL resample codes (what image processors store) -> torchvision modes.
_INTERPOLATION = {
    Image.Resampling.NEAREST: InterpolationMode.NEAREST,
    Image.Resampling.BILINEAR: InterpolationMode.BILINEAR,
    Image.Resampling.BICUBIC: InterpolationMode.BICUBIC,
    Image.Resampling.LANCZOS: InterpolationMode.LANCZOS,
    Image.Resampling.BOX: InterpolationMode.BOX,
    Image.Resampling.HAMMING: InterpolationMode.HAMMING,
}


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

        logging.getLogger("vit_pipeline").warning(
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
        if self.fused and pixels.dtype == torch.uint8 and not spec.std_again:
            # Convert, then subtract and divide in place: the same float operations as the processor, so the same
            # values. A channels-last batch (the cache's batch path) is converted and made planar in one copy (on
            # two CPU threads 1.17 ms against 1.41 ms for a 64x3x128x128 batch made contiguous first, 1.80 against
            # 2.15 ms at 32x3x224x224). Not `torch.sub(uint8, float)`: its mixed-dtype broadcast is a slow kernel (on
            # two CPU threads 14-18 ms against 2-5 ms for a 32x3x224x224 batch, about 0.4 ms of every image).
            mean, std = self.mean.to(device)[:, None, None], self.std.to(device)[:, None, None]
            return pixels.to(torch.float32, memory_format=torch.contiguous_format).sub_(mean).div_(std)
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
    from vit_pipeline.data.augment import image_steps, tensor_steps

    train_steps += image_steps(data_args, spec.interpolation)
    train_transform = T.Compose(train_steps + _finish(spec) + tensor_steps(data_args))
    return train_transform, eval_transform


def collate(examples: list[dict] | dict) -> dict[str, torch.Tensor]:
    """Stack transformed rows into the batch `ViTForImageClassification` takes.

    Labels are class ids (int64), or for multi-label rows (lists of 0/1) a float32 multi-hot matrix, which is what
    the model's binary cross-entropy takes. A batch a dataset built whole (`batches.CachedBatches`) passes as it is.
    """
    if isinstance(examples, dict):
        return examples
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
# float work in the workers. Decoding is `vit_pipeline.data.decode`, the datasets `vit_pipeline.data.prepare`.


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
