"""Load a labelled image dataset into a train and an eval split, with one image column and one label column.

Everything goes through `datasets` (`vit_pipeline.data.sources` says what a dataset name means). Column and label
handling is `vit_pipeline.data.labels` (multi-label: `vit_pipeline.data.multilabel`), the image check
`vit_pipeline.data.check`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import datasets
from datasets import ClassLabel, Dataset, DatasetDict

from vit_pipeline import PipelineError
from vit_pipeline.config.arguments import MULTI_LABEL, SINGLE_LABEL
from vit_pipeline.data.check import check_images, count_serve_skew
from vit_pipeline.data.labels import (
    IMAGE_COLUMNS,
    LABEL_COLUMNS,
    WEBDATASET_IMAGE_COLUMNS,
    WEBDATASET_LABEL_COLUMNS,
    JsonLabel,
    encode_labels,
    find_column,
    label_values,
    needs_json_label,
)
from vit_pipeline.data.multilabel import (
    columns_to_multi_hot,
    encode_label_lists,
    flag_vectors_to_multi_hot,
    is_list_feature,
    iterative_split,
    label_matrix,
    no_positive_count,
    with_multi_hot,
)
from vit_pipeline.data.sources import load_raw
from vit_pipeline.data.splits import EVAL_SPLITS, HELD_OUT_TEST, Splits
from vit_pipeline.utils import is_hub_id

if TYPE_CHECKING:
    from vit_pipeline.data.cache import CacheDecision

logger = logging.getLogger(__name__)


@dataclass
class _Columns:
    """The source columns that become `image` and `label`, and whether the labels are multi-label."""

    image: str
    labels: list[str]
    multi_label: bool


def load_splits(data_args, seed: int, cache_dir: str | None = None, token: str | None = None,
                cache_decision: CacheDecision | None = None, with_source: bool = False) -> Splits:
    """Load, pick the train and eval splits, normalise the columns and labels, subsample, and check images.

    Args:
        data_args: a `DataArguments`.
        seed: seeds the held-out split and the subsampling.
        cache_dir: datasets cache folder (default: the datasets default).
        token: Hub token for private or gated datasets.
        cache_decision: decides an unset `pixel_cache` on the loaded splits, before the image check (the cache pass
            is then the check); `train` and `benchmark` give one.
        with_source: keep a `_source_row` column naming each row `split:row` in the source data (what `audit`
            writes to exclude.txt for images that have no file of their own).

    Returns:
        A `Splits` with `image` and `label` columns in both splits: a ClassLabel, or for multi-label data (a column
        of lists, `label_columns`, or `problem_type: multi_label_classification`) multi-hot rows; its `pixel_cache`
        says whether to build the pixel cache.

    Raises:
        PipelineError: for a missing split or column, unknown labels or unreadable images (one line, what to fix).
    """
    raw = _load_train_and_rest(data_args, cache_dir, token)
    columns = _pick_columns(raw[data_args.train_split], data_args)
    raw, excluded = _source_and_exclusions(raw, columns.image, data_args, with_source)
    train, evals, test, labels, eval_name, test_name = _train_eval_and_test(raw, columns, data_args, seed)
    train, evals = _subsample(train, evals, data_args, seed)
    test = _subsample_test(test, data_args, seed)
    if cache_decision is not None:
        from vit_pipeline.data.cache import decide_pixel_cache

        data_args = decide_pixel_cache(data_args, train, evals, cache_decision)
    digests: dict[str, list[str]] = {}
    train, evals, test, skipped = _check_splits(train, evals, test, eval_name, test_name, data_args, digests)
    # Images pipeline() reads otherwise than training (16-bit, transparent): counted, logged and shown in the card.
    serve_skew = count_serve_skew({"train": train, "eval": evals, **({"test": test} if test is not None else {})},
                                  data_args.preprocessing_num_workers) if data_args.verify_images else {}
    no_positive = _count_no_positive(train, evals, eval_name, labels) if columns.multi_label else {}
    name = data_args.dataset_name
    return Splits(
        train=train,
        eval=evals,
        labels=labels,
        eval_split_name=eval_name,
        test=test,
        test_split_name=test_name,
        hub_id=name if is_hub_id(name) else None,
        config_name=data_args.dataset_config_name,
        skipped_images=skipped,
        serve_skew=serve_skew,
        multi_label=columns.multi_label,
        no_positive=no_positive,
        pixel_cache=data_args.pixel_cache,
        pixel_digests=digests,
        excluded_images=excluded,
    )


def _load_train_and_rest(data_args, cache_dir: str | None, token: str | None) -> DatasetDict:
    """`load_raw`, with the train split checked and WebDataset `.json` labels read into a `label` column."""
    raw = load_raw(data_args, cache_dir=cache_dir, token=token)
    if data_args.train_split not in raw:
        raise PipelineError(f"no '{data_args.train_split}' split (splits: {', '.join(raw)}); set train_split")
    if needs_json_label(raw[data_args.train_split].column_names, data_args.label_column_name):
        raw = DatasetDict({split: ds.map(JsonLabel(), desc=f"Reading {split} labels from json")
                           for split, ds in raw.items()})
    return raw


def _source_and_exclusions(raw: DatasetDict, image_column: str, data_args, with_source: bool
                           ) -> tuple[DatasetDict, dict[str, int]]:
    """The raw splits with their `split:row` ids (`with_source`) and without the `exclude_images` rows, and how many
    rows that dropped per split (before any held-out split or subsampling, so the ids are those of the source)."""
    from vit_pipeline.data.exclude import exclude_images, read_exclusions, with_source_rows

    if with_source:
        raw = with_source_rows(raw)
    if not data_args.exclude_images:
        return raw, {}
    exclusions = read_exclusions(data_args.exclude_images)
    return exclude_images(raw, image_column, exclusions), exclusions.dropped


def _pick_columns(train: Dataset, data_args) -> _Columns:
    """The image and label columns of the train split, and whether its labels are multi-label."""
    columns, features = list(train.column_names), dict(train.features)
    image_col = find_column(columns, features, data_args.image_column_name, IMAGE_COLUMNS + WEBDATASET_IMAGE_COLUMNS,
                            datasets.Image, "image")
    if data_args.label_column_name is None and train.column_names == [image_col]:
        # An imagefolder with a single class folder: datasets reads no label at all from it.
        raise PipelineError("the images have no labels: the data has a single class folder (or none); an image "
                            "folder needs one sub-folder per class, at least two (train/cat/1.png, train/dog/2.png)")
    if data_args.label_columns:
        label_cols = list(data_args.label_columns)
        missing = [c for c in label_cols if c not in train.column_names]
        if missing:
            raise PipelineError(f"label_columns {missing} not in the dataset (columns: {', '.join(train.column_names)})"
                                "; fix label_columns")
    else:
        label_cols = [find_column(columns, features, data_args.label_column_name,
                                  LABEL_COLUMNS + WEBDATASET_LABEL_COLUMNS, ClassLabel, "label")]
    multi_label = bool(data_args.label_columns or data_args.label_flag_names) or (
        data_args.problem_type == MULTI_LABEL) or (
        data_args.problem_type is None and is_list_feature(train.features[label_cols[0]]))
    if data_args.problem_type == SINGLE_LABEL and is_list_feature(train.features[label_cols[0]]):
        raise PipelineError(f"label column '{label_cols[0]}' holds lists of labels: set problem_type: "
                            "multi_label_classification (or leave problem_type unset)")
    return _Columns(image=image_col, labels=label_cols, multi_label=multi_label)


def _canonical(ds: Dataset, split: str, columns: _Columns, data_args) -> Dataset:
    """The split with only its `image` and `label` columns (several 0/1 label columns become one multi-hot)."""
    image_col, label_cols = columns.image, columns.labels
    missing = [c for c in (image_col, *label_cols) if c not in ds.column_names]
    if missing:
        raise PipelineError(f"column(s) {missing} missing from split '{split}' (columns: "
                            f"{', '.join(ds.column_names)})")
    from vit_pipeline.data.exclude import SOURCE_COLUMN

    ds = ds.select_columns([image_col, *label_cols, *([SOURCE_COLUMN] if SOURCE_COLUMN in ds.column_names else [])])
    if data_args.label_columns:
        # Several 0/1 columns become one multi-hot `label` column, classes named after the columns.
        ds = with_multi_hot(ds, label_cols, columns_to_multi_hot(ds, label_cols, split))
        return ds.rename_columns({image_col: "image"}) if image_col != "image" else ds
    return ds.rename_columns({c: n for c, n in ((image_col, "image"), (label_cols[0], "label")) if c != n})


def _encode(train: Dataset, evals: Dataset, eval_name: str, columns: _Columns, data_args
            ) -> tuple[Dataset, Dataset, list[str]]:
    """Both splits' labels in one encoding (ClassLabel ids or multi-hot rows) and the class names."""
    if data_args.label_columns:
        return train, evals, columns.labels
    if data_args.label_flag_names:
        return (*flag_vectors_to_multi_hot(train, evals, eval_name, list(data_args.label_flag_names)),
                list(data_args.label_flag_names))
    if columns.multi_label:
        return encode_label_lists(train, evals, eval_name)
    return encode_labels(train, evals, eval_name)


def _train_eval_and_test(raw: DatasetDict, columns: _Columns, data_args, seed: int
                         ) -> tuple[Dataset, Dataset, Dataset | None, list[str], str, str | None]:
    """The train, eval and test splits with encoded labels, the class names, and the eval and test splits' names for
    the card (the test split's None when there is none).

    The eval split is `eval_split`, else the first usual eval split name present, else `train_val_split` of train
    held out. The test split (`test_split_name` says which) is held out after the eval split: so the eval rows of a
    recipe do not move when a test split is added.
    """
    train = _canonical(raw[data_args.train_split], data_args.train_split, columns, data_args)
    # A split named as the test split is never picked as the eval split (`test_split: test` on a train + test set
    # holds the eval split out of train).
    eval_name = data_args.eval_split or next((s for s in EVAL_SPLITS if s in raw and s not in (
        data_args.train_split, data_args.test_split)), None)
    if data_args.eval_split and data_args.eval_split not in raw:
        raise PipelineError(f"no '{data_args.eval_split}' split (splits: {', '.join(raw)}); fix eval_split")
    test_name = test_split_name(raw, data_args, eval_name)
    evals = _canonical(raw[eval_name], eval_name, columns, data_args) if eval_name is not None else None
    test = _canonical(raw[test_name], test_name, columns, data_args) if test_name in raw else None
    # One encoding for train and the held-out splits found in the data (class names are train's), split back by row
    # count; with none found, train alone is encoded first, so that held-out parts are stratified on its labels.
    found = [split for split in (evals, test) if split is not None]
    names = "/".join(name for name, split in ((eval_name, evals), (test_name, test)) if split is not None)
    # With none found, the stand-in held-out split (its encoding is dropped) is one train row, not none: datasets
    # cannot add a column to an empty selection of a table that had one added (the audit's `_source_row`).
    stand_in = train.select(range(min(1, len(train))))
    train, encoded, labels = _encode(train, datasets.concatenate_datasets(found) if found else stand_in,
                                     names or "train", columns, data_args)
    if evals is not None:
        evals = encoded.select(range(len(evals)))
    if test is not None:
        test = encoded.select(range(len(encoded) - len(test), len(encoded)))
    if evals is None:
        train, evals = _hold_out(train, data_args.train_val_split, seed, columns.multi_label, "train_val_split")
        eval_name = f"{data_args.train_split} ({data_args.train_val_split:.0%} held out, seed {seed})"
    if test_name is not None and test is None:
        train, test = _hold_out(train, data_args.test_fraction, seed, columns.multi_label, "test_fraction")
        test_name = (f"{data_args.train_split} ({data_args.test_fraction:.0%} of the training rows held out, "
                     f"seed {seed})")
    return train, evals, test, labels, eval_name, test_name


def test_split_name(raw: DatasetDict, data_args, eval_name: str | None) -> str | None:
    """Which split is the test split: `test_split` as set (`none`: no test split), else a split named `test` that is
    neither the train nor the eval split, else the held-out part of train (`HELD_OUT_TEST`) when `test_fraction` is
    above 0, else none.

    Raises:
        PipelineError: `test_split` names a split the dataset lacks, or the train or eval split.
    """
    if data_args.test_split == "none":
        return None
    if data_args.test_split is not None:
        if data_args.test_split not in raw:
            raise PipelineError(f"no '{data_args.test_split}' split (splits: {', '.join(raw)}); fix test_split or "
                                "set test_split: none")
        if data_args.test_split in (data_args.train_split, eval_name):
            raise PipelineError(f"test_split '{data_args.test_split}' is also the train or eval split: a test split "
                                "must be held out of both (set test_split: none to have none)")
        return data_args.test_split
    if "test" in raw and "test" not in (data_args.train_split, eval_name):
        return "test"
    return HELD_OUT_TEST if data_args.test_fraction > 0 else None


def _hold_out(train: Dataset, fraction: float, seed: int, multi_label: bool, option: str
              ) -> tuple[Dataset, Dataset]:
    """`fraction` of `train` held out, seeded: stratified on the ClassLabel, or iteratively for multi-label data.

    Raises:
        PipelineError: the held-out part would leave no training rows, or hold no row (`option` names the setting).
    """
    held = math.ceil(fraction * len(train))
    if held >= len(train) or held == 0:
        raise PipelineError(f"{option} {fraction:g} of {len(train)} training rows leaves "
                            f"{'no training rows' if held else 'no held-out row'}: set {option} "
                            f"{'lower' if held else 'higher'}")
    if multi_label:
        # Iterative stratification: every class keeps about its share of positives in both parts.
        train_rows, held_rows = iterative_split(label_matrix(train), fraction, seed)
        return train.select(train_rows), train.select(held_rows)
    counts = Counter(label_values(train))
    # Stratifying needs two images of every class, and both parts with room for one image of each.
    stratify = "label" if min(counts.values()) >= 2 and len(counts) > 1 and min(held, len(train) - held) >= len(
        counts) else None
    if stratify is None:
        logger.warning("The held-out part (%s) is not stratified: some class has a single image, or it holds fewer "
                       "rows than there are classes", option)
    parts = train.train_test_split(test_size=fraction, stratify_by_column=stratify, seed=seed)
    return parts["train"], parts["test"]


def _subsample(train: Dataset, evals: Dataset, data_args, seed: int) -> tuple[Dataset, Dataset]:
    """At most `max_train_samples` / `max_eval_samples` rows, drawn with `seed`; neither split left empty."""
    if data_args.max_train_samples is not None and data_args.max_train_samples < len(train):
        train = train.shuffle(seed=seed).select(range(data_args.max_train_samples))
    if data_args.max_eval_samples is not None and data_args.max_eval_samples < len(evals):
        evals = evals.shuffle(seed=seed).select(range(data_args.max_eval_samples))
    if len(train) == 0 or len(evals) == 0:
        raise PipelineError(f"empty split after loading (train {len(train)} rows, eval {len(evals)} rows): check "
                            "the data and max_*_samples")
    return train, evals


def _subsample_test(test: Dataset | None, data_args, seed: int) -> Dataset | None:
    """At most `max_eval_samples` test rows too (drawn with `seed`): the test split is scored like the eval split."""
    if test is not None and data_args.max_eval_samples is not None and data_args.max_eval_samples < len(test):
        return test.shuffle(seed=seed).select(range(data_args.max_eval_samples))
    if test is not None and len(test) == 0:
        raise PipelineError("the test split is empty: set test_split to a split with rows, or test_split: none")
    return test


def _check_splits(train: Dataset, evals: Dataset, test: Dataset | None, eval_name: str, test_name: str | None,
                  data_args, digests: dict[str, list[str]]) -> tuple[Dataset, Dataset, Dataset | None, dict[str, int]]:
    """`verify_images`: the splits without their unreadable images (per `bad_images`), and how many were dropped;
    `digests` gets the pixel digests ("train", "eval", "test") the check took while decoding."""
    skipped: dict[str, int] = {}
    if data_args.verify_images and data_args.pixel_cache and data_args.fast_transforms:
        # One decode pass, not two: building the pixel cache checks every image (`cache.drop_unreadable`); the test
        # split, never cached, is checked here.
        logger.info("Images are checked while the pixel cache is built (one decode pass)")
        if test is not None:
            found = {}
            checked, skipped = check_images({test_name: test}, data_args.bad_images,
                                            data_args.preprocessing_num_workers, found)
            test, digests["test"] = checked[test_name], found[test_name]
    elif data_args.verify_images:
        # Keys name the splits in messages; evaluating on train itself still checks two distinct selections.
        eval_key = eval_name if eval_name != "train" else "train (eval)"
        found: dict[str, list[str]] = {}
        test_key = test_name if test_name not in ("train", eval_key) else f"{test_name} (test)"
        named = {"train": train, eval_key: evals, **({test_key: test} if test is not None else {})}
        checked, skipped = check_images(named, data_args.bad_images, data_args.preprocessing_num_workers, found)
        train, evals, test = checked["train"], checked[eval_key], checked.get(test_key)
        digests.update(train=found["train"], eval=found[eval_key])
        if test is not None:
            digests["test"] = found[test_key]
    return train, evals, test, skipped


def _count_no_positive(train: Dataset, evals: Dataset, eval_name: str, labels: list[str]) -> dict[str, int]:
    """Multi-label: the images with no positive label per split (logged with the class count)."""
    no_positive = {"train": no_positive_count(train), eval_name: no_positive_count(evals)}
    logger.info("Multi-label: %d classes; images with no positive label: %d of %d train, %d of %d eval",
                len(labels), no_positive["train"], len(train), no_positive[eval_name], len(evals))
    return no_positive
