"""Decoding: every image mode a dataset may hold becomes the RGB of `to_rgb`, from bytes, paths, PIL images and
arrays alike."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vit_pipeline.data.decode import _torchvision_decodable, decode_rgb, to_rgb


def odd_images() -> dict[str, bytes]:
    """Real photo pixels saved in every mode a dataset may hold, encoded as a dataset stores them."""
    from skimage import data as skdata

    rgb = Image.fromarray(skdata.coffee()[:60, :90])
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 90).astype(np.uint8), (60, 1)))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    palette_transparent = rgb.convert("P")
    palette_transparent.info["transparency"] = 0
    sixteen = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    images = {
        "RGB.jpg": (rgb, "JPEG"), "L.jpg": (rgb.convert("L"), "JPEG"), "CMYK.jpg": (rgb.convert("CMYK"), "JPEG"),
        "RGB.png": (rgb, "PNG"), "L.png": (rgb.convert("L"), "PNG"), "LA.png": (rgb.convert("L").convert("LA"), "PNG"),
        "RGBA.png": (rgba, "PNG"), "P.png": (rgb.convert("P"), "PNG"),
        "P-transparent.png": (palette_transparent, "PNG"),
        "I16.png": (sixteen, "PNG"), "1.png": (rgb.convert("1"), "PNG"), "RGB.webp": (rgb, "WEBP"),
        "P.gif": (rgb.convert("P"), "GIF"), "RGB.tiff": (rgb, "TIFF"), "RGB.bmp": (rgb, "BMP"),
    }
    out = {}
    for name, (image, fmt) in images.items():
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        out[name] = buffer.getvalue()
    return out


@pytest.mark.parametrize("name", list(odd_images()))
def test_every_mode_decodes_to_the_rgb_of_to_rgb(name):
    data = odd_images()[name]
    decoded = decode_rgb({"bytes": data, "path": None})
    expected = np.asarray(to_rgb(Image.open(io.BytesIO(data))))
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 60, 90)
    # Plain photos take torchvision's decoders; anything with alpha, a palette or 16 bits takes PIL's.
    assert _torchvision_decodable(data) == (name in ("RGB.jpg", "L.jpg", "CMYK.jpg", "RGB.png", "L.png"))
    np.testing.assert_array_equal(decoded.permute(1, 2, 0).numpy(), expected)
    if name == "RGBA.png":
        # Transparent on the left: composited on white, not on black.
        assert decoded[:, :, 0].min() == 255
    if name == "I16.png":
        # 16-bit scaled to 8 bits, not clipped to white.
        assert 0 < decoded.float().mean() < 250


def test_decode_rgb_reads_paths_pil_images_and_arrays(tmp_path):
    from skimage import data as skdata

    array = skdata.chelsea()[:40, :50]
    path = tmp_path / "cat.png"
    Image.fromarray(array).save(path)
    expected = torch.from_numpy(array).permute(2, 0, 1)
    for item in ({"bytes": None, "path": str(path)}, str(path), Image.fromarray(array), array):
        assert torch.equal(decode_rgb(item), expected)
    gray = decode_rgb(array[:, :, 0])
    assert gray.shape == (3, 40, 50) and torch.equal(gray[0], gray[2])
