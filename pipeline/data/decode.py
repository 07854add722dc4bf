"""Decode an image cell to uint8 RGB pixels: `to_rgb` for PIL images, `decode_rgb` for bytes, paths and arrays.

Plain JPEG and PNG photos are decoded by torchvision (libjpeg-turbo / libpng: PIL's pixels without PIL's copies);
every other mode goes through PIL and `to_rgb`, the reference both paths match.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image

from vit_pipeline import PipelineError


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
