"""The fast data path: decode and crop as uint8 in the loader, normalize whole batches on the device.

Its eval output must equal what `pipeline("image-classification")` feeds the model for the same files (the saved
image processor on `load_image`), its decoding must convert every image mode as `to_rgb` does, and pixels must stay
uint8 until the normalizer.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.transforms import (
    BatchTransform,
    PixelNormalizer,
    _torchvision_decodable,
    build_fast_transforms,
    build_transforms,
    cache_size,
    collate,
    decode_rgb,
    fast_dataset,
    image_spec,
    prepare_dataset,
    to_rgb,
)

# Photos of different sizes, in RGB and in grayscale (camera): rocket's 427x640 gives an odd center-crop margin.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field")
# Eval output vs the image processor: the same uint8 pixels go through the same fused float ops, so the results are
# equal; the tolerance only leaves room for float rounding on other platforms. One gray level is 1/255/std = 0.0078.
ATOL = 1e-6


def processors():
    from transformers import ViTImageProcessor

    return {
        "vit-224-bilinear": ViTImageProcessor(),
        "shortest-256-crop-224-bicubic": ViTImageProcessor(size={"shortest_edge": 256}, do_center_crop=True,
                                                           crop_size={"height": 224, "width": 224}, resample=3),
        "32x48-imagenet-stats": ViTImageProcessor(size={"height": 32, "width": 48}, image_mean=[0.485, 0.456, 0.406],
                                                  image_std=[0.229, 0.224, 0.225]),
    }


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory) -> list:
    """The photos as JPEG and PNG files (what `pipeline()` reads) and a datasets Dataset of their bytes."""
    import datasets
    from skimage import data as skdata

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skdata, name)())
        for fmt, suffix in (("JPEG", "jpg"), ("PNG", "png")):
            path = folder / f"{name}.{suffix}"
            image.save(path, format=fmt)
            paths.append(path)
    # The encoded bytes inside the dataset, as a Hub parquet or save_to_disk dataset holds them.
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": p.read_bytes(), "path": None} for p in paths], "label": list(range(len(paths)))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    return paths, ds


@pytest.mark.parametrize("pixel_cache", [False, True], ids=["decode-per-epoch", "pixel-cache"])
@pytest.mark.parametrize("name", list(processors()))
def test_eval_batches_equal_the_image_processor_on_real_photos(photo_files, name, pixel_cache):
    from transformers.image_utils import load_image

    from pipeline.config import DataArguments

    processor = processors()[name]
    paths, ds = photo_files
    data_args = DataArguments(dataset_name="x", pixel_cache=pixel_cache)
    batch = collate(prepare_dataset(ds, processor, data_args, train=False).__getitems__(list(range(len(ds)))))
    assert batch["pixel_values"].dtype == torch.uint8
    ours = PixelNormalizer(image_spec(processor))(batch["pixel_values"])
    # What pipeline("image-classification") does with a file: load_image, then the saved image processor.
    expected = processor([load_image(str(p)) for p in paths], return_tensors="pt")["pixel_values"]
    assert ours.shape == expected.shape == (len(paths), 3, *image_spec(processor).output_size)
    torch.testing.assert_close(ours, expected, rtol=0, atol=ATOL)
    if pixel_cache:
        return
    # The per-image path (fast_transforms: false) agrees too, to float rounding of its unfused rescale + normalize.
    _, slow_eval = build_transforms(processor)
    slow = collate(ds.with_transform(BatchTransform(slow_eval)).__getitems__(list(range(len(ds)))))
    torch.testing.assert_close(slow["pixel_values"], expected, rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_normalizing_on_the_gpu_gives_the_processor_output(photo_files):
    from transformers.image_utils import load_image

    processor = processors()["vit-224-bilinear"]
    paths, ds = photo_files
    batch = collate(fast_dataset(ds, build_fast_transforms(processor)[1]).__getitems__(list(range(len(ds)))))
    ours = PixelNormalizer(image_spec(processor)).cuda()(batch["pixel_values"].cuda()).cpu()
    expected = processor([load_image(str(p)) for p in paths], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, expected, rtol=0, atol=ATOL)


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


def test_pixels_stay_uint8_until_the_normalizer(photo_files):
    from transformers import ViTImageProcessor
    from transformers.image_utils import load_image

    from pipeline.config import DataArguments

    processor = ViTImageProcessor()
    paths, ds = photo_files
    data_args = DataArguments(dataset_name="x", crop_scale_min=0.3)
    train_transform, _ = build_fast_transforms(processor, data_args)
    train = fast_dataset(ds, train_transform)
    rows = train.__getitems__(list(range(len(ds))))
    assert all(r["pixel_values"].dtype == torch.uint8 and r["pixel_values"].shape == (3, 224, 224) for r in rows)
    batch = collate(rows)
    assert batch["pixel_values"].dtype == torch.uint8 and batch["labels"].dtype == torch.long
    pixels = PixelNormalizer(image_spec(processor))(batch["pixel_values"])
    assert pixels.dtype == torch.float32 and -1.0 <= pixels.min() < 0 < pixels.max() <= 1.0
    # The train crop is random (two epochs see different crops) and is a crop of the photo, not of something else:
    # every crop's mean color is within the photo's range of colors.
    again = collate(train.__getitems__(list(range(len(ds)))))["pixel_values"]
    assert not torch.equal(again, batch["pixel_values"])
    full = torch.tensor([np.asarray(load_image(str(p)), dtype=np.float64).mean() for p in paths], dtype=torch.float32)
    assert torch.allclose(batch["pixel_values"].float().mean(dim=(1, 2, 3)), full, atol=60)
    # Normalizing a float batch again is a no-op (the per-image path's batches pass through the Trainer unchanged).
    assert PixelNormalizer(image_spec(processor))(pixels) is pixels


def test_fast_transforms_use_the_augmentation_switches():
    from torchvision.transforms import v2 as T
    from transformers import ViTImageProcessor

    from pipeline.config import DataArguments

    processor = ViTImageProcessor()
    plain = DataArguments(dataset_name="x", random_resized_crop=False, horizontal_flip=False)
    train, evals = build_fast_transforms(processor, plain)
    kinds = [type(t) for t in train.transforms]
    assert T.RandomResizedCrop not in kinds and T.RandomHorizontalFlip not in kinds and T.Resize in kinds
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    assert torch.equal(train(image), evals(image))  # no augmentation: train = eval
    default_train, _ = build_fast_transforms(processor, DataArguments(dataset_name="x"))
    kinds = [type(t) for t in default_train.transforms]
    assert T.RandomResizedCrop in kinds and T.RandomHorizontalFlip in kinds
    assert default_train(image).dtype == torch.uint8


def test_pixel_cache_keeps_training_images_a_little_larger_than_the_model_input(photo_files):
    from transformers import ViTImageProcessor

    from pipeline.config import DataArguments

    processor = ViTImageProcessor()
    _, ds = photo_files
    assert cache_size(image_spec(processor)) == 256
    train = prepare_dataset(ds, processor, DataArguments(dataset_name="x", pixel_cache=True), train=True)
    raw = train.with_format(None)
    sides = [min(h, w) for h, w in zip(raw["height"], raw["width"], strict=True)]
    # Every photo is at least 300 px: shrunk to a 256 px shorter side, aspect kept.
    assert sides == [256] * len(ds)
    rows = train.__getitems__(list(range(len(ds))))
    assert all(r["pixel_values"].dtype == torch.uint8 and r["pixel_values"].shape == (3, 224, 224) for r in rows)
    # The cache is built once: a second preparation finds it (same fingerprint) instead of decoding again.
    again = prepare_dataset(ds, processor, DataArguments(dataset_name="x", pixel_cache=True), train=True)
    assert again.with_format(None)["height"] == raw["height"]


def test_pixel_cache_needs_the_fast_transforms():
    from pipeline import PipelineError
    from pipeline.config import DataArguments

    with pytest.raises(PipelineError, match="pixel_cache needs fast_transforms"):
        DataArguments(dataset_name="x", pixel_cache=True, fast_transforms=False)


@pytest.mark.slow
def test_train_with_pixel_cache_and_reload_with_pipeline(tiny_vit, photos_parquet, tmp_path):
    """The real command with the pixel cache: it trains, evaluates on cached pixels, and pipeline() reloads it."""
    import json

    from tests.commands.test_train import check_output, train
    from tests.conftest import FAST

    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny_vit), "--dataset_name", str(photos_parquet), "--output_dir", str(out),
          *FAST, "--pixel_cache", "true")
    check_output(out, ["astronaut", "chelsea", "coffee"])
    assert "pixel_cache: true" in (out / "recipe.yaml").read_text()
    # The eval loss measured on cached pixels is the loss of the saved model on what its saved processor makes of the
    # same test images (the fixture's test split): training evaluated exactly what pipeline() will see.
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from tests.conftest import photos

    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    test_rows = photos(n_per_class=4, seed=1)
    inputs = processor([image for image, _ in test_rows], return_tensors="pt")
    labels = torch.tensor([model.config.label2id[name] for _, name in test_rows])
    with torch.no_grad():
        loss = model(**inputs, labels=labels).loss.item()
    assert loss == pytest.approx(json.loads((out / "eval_results.json").read_text())["eval_loss"], abs=1e-5)
