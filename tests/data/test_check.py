"""The image check (`verify_images`): it says up front how long it will take, and how long it took."""

from __future__ import annotations

import logging
import re

from tests.conftest import digits, photos, to_dataset
from vit_pipeline.data import check


def test_image_check_says_how_long_it_will_take(monkeypatch, caplog):
    monkeypatch.setattr(check, "ESTIMATE_ABOVE", 10)  # the real threshold is 2,000 images
    images = to_dataset(digits(n_per_class=7))
    with caplog.at_level(logging.INFO, logger="vit_pipeline"):
        assert check.find_bad_images(images, "train") == []
    estimate = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Checking 70 train"))
    assert re.fullmatch(r"Checking 70 train images \(each decoded once\): about \d+ s at \d+ images/s", estimate)
    assert any(re.fullmatch(r"Checked 70 train images in \d+ s", r.getMessage()) for r in caplog.records)


def skewed_rows():
    """Real digits and photos as files `pipeline()` reads otherwise than training (16-bit, transparent), and as files
    both read the same way (8-bit, opaque RGBA, 16-bit values that fit in 8 bits, CMYK)."""
    import numpy as np
    from PIL import Image

    digit_images = [image for image, _ in digits(n_per_class=1, classes=4)]
    photo_images = [image for image, _ in photos(n_per_class=1)]
    sixteen = [Image.fromarray(np.asarray(im, dtype=np.uint16) * 257) for im in digit_images[:3]]  # full 16-bit range
    alpha = np.zeros((48, 48), dtype=np.uint8)
    alpha[12:36, 12:36] = 255  # a photo cut out on a transparent square
    transparent = [Image.fromarray(np.dstack([np.asarray(im), alpha])) for im in photo_images[:2]]
    same = [digit_images[3], photo_images[2].convert("RGBA"), Image.fromarray(np.asarray(digit_images[0], np.uint16)),
            photo_images[0].convert("CMYK")]
    return [(im, "odd") for im in sixteen + transparent] + [(im, "plain") for im in same]


def test_serve_skew_counts_exactly_the_images_pipeline_reads_otherwise(caplog):
    import io

    import numpy as np
    from PIL import Image
    from transformers.image_utils import load_image

    from vit_pipeline.data.decode import decode_rgb

    rows = skewed_rows()
    ds = to_dataset(rows)
    with caplog.at_level(logging.WARNING, logger="vit_pipeline"):
        counts = check.count_serve_skew({"train": ds, "eval": ds.select(range(5, 9))})
    assert counts == {"train": {"16-bit": 3, "transparent": 2}}
    warning = next(r.getMessage() for r in caplog.records if "Train/serve skew" in r.getMessage())
    assert "5 of 9 train images (16-bit: 3, transparent: 2)" in warning and "vit-pipeline predict" in warning
    # What is counted is what really differs: training's decoding against the pipeline's, pixel for pixel.
    raw = ds.cast_column("image", __import__("datasets").Image(decode=False))
    for (_, kind), cell in zip(rows, raw["image"], strict=True):
        trained = decode_rgb(cell).permute(1, 2, 0).numpy()
        served = np.asarray(load_image(Image.open(io.BytesIO(cell["bytes"]))))
        assert np.array_equal(trained, served) == (kind == "plain")
