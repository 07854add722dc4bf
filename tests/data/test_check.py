"""The image check (`verify_images`): it says up front how long it will take, and how long it took."""

from __future__ import annotations

import logging
import re

from tests.conftest import digits, to_dataset
from vit_pipeline.data import check


def test_image_check_says_how_long_it_will_take(monkeypatch, caplog):
    monkeypatch.setattr(check, "ESTIMATE_ABOVE", 10)  # the real threshold is 2,000 images
    images = to_dataset(digits(n_per_class=7))
    with caplog.at_level(logging.INFO, logger="vit_pipeline"):
        assert check.find_bad_images(images, "train") == []
    estimate = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Checking 70 train"))
    assert re.fullmatch(r"Checking 70 train images \(each decoded once\): about \d+ s at \d+ images/s", estimate)
    assert any(re.fullmatch(r"Checked 70 train images in \d+ s", r.getMessage()) for r in caplog.records)
