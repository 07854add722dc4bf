"""Transforms come from the image processor: eval matches it on real images; any PIL mode becomes RGB."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import photos
from vit_pipeline.config import DataArguments
from vit_pipeline.data.decode import to_rgb
from vit_pipeline.data.prepare import BatchTransform
from vit_pipeline.data.transforms import build_transforms, collate, image_spec


def processor(size=32, **kwargs):
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": size, "width": size}, **kwargs)


def test_spec_comes_from_the_processor():
    spec = image_spec(processor(48, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]))
    assert spec.output_size == (48, 48)
    assert spec.mean == (0.1, 0.2, 0.3) and spec.std == (0.4, 0.5, 0.6)


@pytest.mark.parametrize("size", [32, 224])
def test_eval_transform_matches_the_image_processor(size):
    # pipeline() preprocesses with the saved image processor: training's eval transform must give the same tensor.
    proc = processor(size, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    _, eval_transform = build_transforms(proc)
    for image, _ in photos(n_per_class=2, size=97):
        ours = eval_transform(image)
        theirs = proc(image, return_tensors="pt")["pixel_values"][0]
        assert ours.shape == theirs.shape == (3, size, size)
        assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_train_transform_is_random_and_switchable():
    image = photos(n_per_class=1, size=64)[0][0]
    train, eval_ = build_transforms(processor(32))
    torch.manual_seed(0)
    a, b = train(image), train(image)
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)
    plain, _ = build_transforms(processor(32), DataArguments(dataset_name="x", random_resized_crop=False,
                                                             horizontal_flip=False))
    assert torch.equal(plain(image), eval_(image))


def test_every_mode_becomes_rgb():
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L")
    deep = Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16))  # a 16-bit scan
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    cases = [gray, gray.convert("P"), gray.convert("CMYK"), gray.convert("1"), deep, rgba, gray.convert("LA"),
             gray.convert("I"), Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), mode="F")]
    for image in cases:
        rgb = to_rgb(image)
        assert rgb.mode == "RGB" and rgb.size == (8, 8), image.mode
    # 16-bit is scaled to 8 bits, not clipped to white: 40000 / 65535 * 255 = 156.
    assert to_rgb(deep).getpixel((0, 0)) == (156, 156, 156)
    # Transparent pixels are shown on white, not as their hidden color.
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(gray).getpixel((3, 3))[0] == gray.getpixel((3, 3))


def test_batch_transform_and_collate():
    _, eval_transform = build_transforms(processor(16))
    rows = photos(n_per_class=1, size=20)
    batch = BatchTransform(eval_transform)({"image": [im.convert("L") for im, _ in rows], "label": [0, 1, 2]})
    examples = [{"pixel_values": p, "label": label} for p, label in zip(batch["pixel_values"], batch["label"],
                                                                         strict=True)]
    collated = collate(examples)
    assert collated["pixel_values"].shape == (3, 3, 16, 16) and collated["pixel_values"].dtype == torch.float32
    assert collated["labels"].tolist() == [0, 1, 2]
