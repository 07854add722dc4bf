"""Which images two selections share, by content: what `evaluate` checks before scoring a trained run on a split that
may hold some of its training rows (a figure on images the model trained on is not a held-out figure)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
from datasets import Dataset


def image_keys(dataset: Dataset) -> list[str]:
    """The SHA-1 of each row's encoded image (the file's bytes when the cell holds only a path), without decoding.

    Content, not paths or row numbers: the same image reached through another copy of the dataset, another
    `dataset_name` or another split still matches.
    """
    cells = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    keys = []
    for cell in cells.with_format(None)["image"]:
        data = cell.get("bytes") or Path(cell["path"]).read_bytes()
        keys.append(hashlib.sha1(data).hexdigest())
    return keys


def count_shared(dataset: Dataset, others: Dataset) -> int:
    """How many rows of `dataset` have an image that is also in `others`."""
    known = set(image_keys(others))
    return sum(key in known for key in image_keys(dataset))
