"""What loading gives the rest of the pipeline: a train and an eval split with canonical `image` and `label` columns.

`Splits` (map-style, `load.load_splits`) and `StreamSplits` (a training stream, `stream.stream_splits`) share their
fields through `DataSplits`, so commands and the model card read either the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

# Split names taken as the eval split, in this order, when `eval_split` is not set.
EVAL_SPLITS = ("validation", "valid", "val", "test")
# What `load.test_split_name` calls a test split held out of train (`test_fraction`), before it is named for the card.
HELD_OUT_TEST = "<held out of train>"


@dataclass
class DataSplits:
    """The two splits the pipeline trains and evaluates on, the class names, and what the card says about them."""

    train: Dataset | IterableDataset
    eval: Dataset
    labels: list[str]
    # How the eval split was obtained, for the model card: a split name, or "train (15% held out)".
    eval_split_name: str
    # Hub id of the dataset when there is one (cards link to it), else None.
    hub_id: str | None = None
    config_name: str | None = None
    skipped_images: dict[str, int] = field(default_factory=dict)
    # Images `pipeline()` reads otherwise than training, per split and kind: {"train": {"16-bit": 12}} (`data.check`).
    serve_skew: dict[str, dict[str, int]] = field(default_factory=dict)
    # Multi-label: `label` holds multi-hot rows (one 0/1 float per class) instead of a ClassLabel id.
    multi_label: bool = False
    # Multi-label: images with no positive label ("no finding") per split, e.g. {"train": 12, "validation": 3}.
    no_positive: dict[str, int] = field(default_factory=dict)
    # The test split (never used to choose anything: scored once on the saved model) and its name for the card; None
    # when there is none (`test_split: none`, `test_fraction: 0`, a stream).
    test: Dataset | None = None
    test_split_name: str | None = None


@dataclass
class Splits(DataSplits):
    """Map-style splits: both are `Dataset`s, loaded, subsampled and checked up front."""

    train: Dataset
    # `pixel_cache` as preparing the splits should apply it: as set, or decided while loading when it was unset
    # (then the images are checked while the cache is built, in one decode pass).
    pixel_cache: bool | None = None
    # The digest of every image's pixels, {"train": [...], "eval": [...], "test": [...]} (`duplicates.pixel_digest`),
    # taken by the image check; train's and eval's are missing until the pixel cache pass takes them when that pass is
    # the check (the test split's are taken first then).
    pixel_digests: dict[str, list[str]] = field(default_factory=dict)
    # Rows dropped per source split by `exclude_images`.
    excluded_images: dict[str, int] = field(default_factory=dict)

    def by_name(self) -> dict[str, Dataset]:
        """{"train", "eval", and "test" when there is one: the split}, train first: the order in which duplicate
        checks compare the others with train (`duplicates.find_exact_duplicates`)."""
        named = {"train": self.train, "eval": self.eval}
        return named if self.test is None else {**named, "test": self.test}


@dataclass
class StreamSplits(DataSplits):
    """A training stream and a bounded, in-memory eval split; single-label only (`multi_label` stays False)."""

    train: IterableDataset
    # Training rows in the whole dataset when its metadata says (a Hub dataset_info), else None (unknown).
    train_rows: int | None = None
