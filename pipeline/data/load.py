"""Load a labelled image dataset into a train and an eval split, with one image column and one ClassLabel column.

Everything goes through `datasets`: a Hub id, a local folder laid out like a Hub dataset repo (parquet files or an
imagefolder, with or without a README holding `dataset_info`), a `save_to_disk` folder, or plain image folders.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict
from PIL import Image

from pipeline import PipelineError
from pipeline.config.arguments import MULTI_LABEL, SINGLE_LABEL
from pipeline.data.builtin import BUILTIN_PREFIX, resolve_builtin
from pipeline.data.multilabel import (
    columns_to_multi_hot,
    encode_label_lists,
    flag_vectors_to_multi_hot,
    is_list_feature,
    iterative_split,
    label_matrix,
    no_positive_count,
    with_multi_hot,
)
from pipeline.utils import cpu_count, first_line, is_hub_id, one_line

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels")
# WebDataset shards (.tar, read by datasets' "webdataset" builder) name their columns after the member extensions.
WEBDATASET_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp")
WEBDATASET_LABEL_COLUMNS = ("cls",)
# A WebDataset `.json` member holding the label under one of these keys.
JSON_LABEL_KEYS = ("label", "labels", "cls", "class")


class JsonLabel:
    """`map` function (map-style or streaming): the label out of a WebDataset `.json` member, as a `label` column."""

    def __init__(self, column: str = "json"):
        self.column = column

    def __call__(self, row: dict) -> dict:
        value = row[self.column]
        if isinstance(value, dict):
            value = next((value[k] for k in JSON_LABEL_KEYS if k in value), None)
        return {"label": value}


def needs_json_label(columns: list[str], given: str | None) -> bool:
    """True for WebDataset rows whose only label is inside a `.json` member."""
    return given is None and "json" in columns and not any(
        c in columns for c in LABEL_COLUMNS + WEBDATASET_LABEL_COLUMNS)
EVAL_SPLITS = ("validation", "valid", "val", "test")
# File endings read as images in plain folders (what `imagefolder` and `vit-pipeline predict` pick up).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def has_images(folder: str | os.PathLike) -> bool:
    """Whether `folder` (searched recursively) holds at least one file with an image ending."""
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in Path(folder).rglob("*") if p.is_file())


# Split folder names datasets recognizes in a data folder, and the split each becomes (its own naming rules).
SPLIT_FOLDERS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test", "eval": "test",
                 "evaluation": "test"}


def image_split_folders(root: Path) -> dict[str, str] | None:
    """`{split: "root/<folder>/**"}` for a plain local imagefolder (`root/<split>/<class>/<image>`), else None.

    datasets infers the splits of a folder by trying about 45 file patterns, each walking every file: with 20,000
    images that is most of the start-up. A folder that is plainly split folders of images gets one pattern per split
    instead (the splits and labels datasets would infer). Anything else (a README with configs, parquet, WebDataset
    or metadata files, loose files at the top) keeps datasets' own inference.
    """
    if (root / "README.md").exists():
        return None
    entries = list(root.iterdir())
    folders = {e.name.lower(): e for e in entries if e.is_dir() and not e.name.startswith(".")}
    loose = [e for e in entries if e.is_file() and not e.name.startswith(".")]
    if loose or not folders or not set(folders) <= set(SPLIT_FOLDERS):
        return None
    splits: dict[str, str] = {}
    for name, folder in folders.items():
        split = SPLIT_FOLDERS[name]
        # A few entries of each split show what it holds: images in class folders, nothing datasets reads otherwise.
        sample = [p for _, p in zip(range(50), folder.rglob("*"), strict=False) if p.is_file()]
        if split in splits or not sample or any(p.suffix.lower() not in IMAGE_EXTENSIONS for p in sample):
            return None
        splits[split] = str(folder / "**")
    return splits


@dataclass
class Splits:
    """The two splits the pipeline trains and evaluates on, with canonical `image` and `label` columns."""

    train: Dataset
    eval: Dataset
    labels: list[str]
    # How the eval split was obtained, for the model card: a split name, or "train (15% held out)".
    eval_split_name: str
    # Hub id of the dataset when there is one (cards link to it), else None.
    hub_id: str | None = None
    config_name: str | None = None
    skipped_images: dict[str, int] = field(default_factory=dict)
    # Multi-label: `label` holds multi-hot rows (one 0/1 float per class) instead of a ClassLabel id.
    multi_label: bool = False
    # Multi-label: images with no positive label ("no finding") per split, e.g. {"train": 12, "validation": 3}.
    no_positive: dict[str, int] = field(default_factory=dict)


def load_raw(data_args, cache_dir: str | None = None, token: str | None = None) -> DatasetDict:
    """Load the dataset named by `data_args` as a `DatasetDict`, without touching its columns.

    Raises:
        PipelineError: the dataset cannot be found or loaded (with what to check).
    """
    name = data_args.dataset_name
    try:
        if name is None:
            data_files = {"train": os.path.join(data_args.train_dir, "**")}
            if data_args.validation_dir:
                data_files["validation"] = os.path.join(data_args.validation_dir, "**")
            for folder in filter(None, (data_args.train_dir, data_args.validation_dir)):
                if not Path(folder).is_dir():
                    raise PipelineError(f"image folder {folder} does not exist: check train_dir / validation_dir")
                if not has_images(folder):
                    raise PipelineError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} files, "
                                        "in one subfolder per class): check train_dir / validation_dir")
            return datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
        if name.startswith(BUILTIN_PREFIX):
            name = str(resolve_builtin(name))
        local = Path(name)
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
            loaded = datasets.load_from_disk(str(local))
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
        split_folders = image_split_folders(local) if local.is_dir() else None
        if split_folders:
            return datasets.load_dataset("imagefolder", data_files=split_folders, cache_dir=cache_dir)
        return datasets.load_dataset(
            name,
            data_args.dataset_config_name,
            revision=data_args.dataset_revision,
            cache_dir=cache_dir,
            token=token,
        )
    except PipelineError:
        raise
    except Exception as err:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, HTTP, ...)
        where = name or data_args.train_dir
        hint = (
            "check the path"
            if name is None or Path(name).exists()
            else "check the dataset id and config, your network (or HF_HUB_OFFLINE), and HF_TOKEN for gated data"
        )
        cause = err.__cause__
        if isinstance(err, datasets.exceptions.DatasetGenerationError) and isinstance(cause, (TypeError, ValueError)):
            # The real reason is in the cause: usually a split whose column types differ from the first split's.
            raise PipelineError(f"cannot load dataset '{where}': {type(cause).__name__}: {one_line(cause)}; the "
                                "splits' columns have different types (lists of labels in one split, single labels "
                                "in another?): give every split the same types") from err
        raise PipelineError(f"cannot load dataset '{where}': {type(err).__name__}: {first_line(err)}; {hint}") from err


def find_column(ds: Dataset, given: str | None, candidates: tuple[str, ...], feature_type: type, what: str) -> str:
    """Return the column to use for `what`: the one given, else a usual name, else the first of `feature_type`."""
    columns = list(ds.column_names)
    if given is not None:
        if given not in columns:
            raise PipelineError(f"{what} column '{given}' not in the dataset (columns: {', '.join(columns)}); "
                                f"set {what}_column_name to one of them")
        return given
    for name in candidates:
        if name in columns:
            return name
    for name, feature in ds.features.items():
        # A list of that type counts too: `Sequence(ClassLabel)` is a multi-label column.
        if isinstance(feature, feature_type) or (is_list_feature(feature) and isinstance(feature.feature,
                                                                                          feature_type)):
            return name
    raise PipelineError(f"no {what} column found (columns: {', '.join(columns)}); set {what}_column_name")


def _label_values(ds: Dataset) -> list:
    return ds.select_columns(["label"]).with_format(None)["label"][:]


def encode_labels(train: Dataset, evals: Dataset, eval_name: str) -> tuple[Dataset, Dataset, list[str]]:
    """Make `label` a ClassLabel shared by both splits.

    ClassLabel names are kept; strings become sorted class names; integers become their own names ("0", "7", ...).

    Raises:
        PipelineError: rows without a label, or eval labels that never occur in train (named).
    """
    feature = train.features["label"]
    train_values, eval_values = _label_values(train), _label_values(evals)
    for split, values in (("train", train_values), (eval_name, eval_values)):
        if any(v is None or (isinstance(v, int) and v < 0) for v in values):
            raise PipelineError(f"split '{split}' has rows without a label (None or -1): drop them or pick another "
                                "split with eval_split")
    if isinstance(feature, ClassLabel):
        eval_feature = evals.features["label"]
        names = list(feature.names)
        if isinstance(eval_feature, ClassLabel) and list(eval_feature.names) == names:
            train_values, eval_values = [names[v] for v in train_values], [names[v] for v in eval_values]
            unknown = sorted(set(eval_values) - set(train_values))
            if unknown:
                raise PipelineError(f"split '{eval_name}' has labels that train never has: {unknown}; "
                                    "add training images for them or remove those rows")
            return train, evals, names
        train_values = [names[v] for v in train_values]
        if isinstance(eval_feature, ClassLabel):
            eval_values = [eval_feature.names[v] for v in eval_values]
    else:
        if not isinstance(feature, datasets.Value) or feature.dtype not in (
            "string", "large_string", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"
        ):
            raise PipelineError(f"label column has type {feature}: use string or integer labels")
        # Sort numbers as numbers, then name them: "2" before "10".
        names = [str(v) for v in sorted(set(train_values))]
        train_values = [str(v) for v in train_values]
        eval_values = [str(v) for v in eval_values]
    unknown = sorted(set(eval_values) - set(train_values))
    if unknown:
        raise PipelineError(f"split '{eval_name}' has labels that train never has: {unknown}; "
                            "add training images for them or remove those rows")
    if len(set(train_values)) < 2:
        raise PipelineError(f"split 'train' has a single class ({', '.join(sorted(set(train_values))) or 'none'}): "
                            "a classifier needs at least two; add images of another class")
    index = {name: i for i, name in enumerate(names)}
    class_label = ClassLabel(names=names)

    def relabel(ds: Dataset, values: list[str]) -> Dataset:
        # add_column joins a new Arrow column without rewriting the image bytes (map would copy them all).
        return ds.remove_columns("label").add_column("label", [index[v] for v in values], feature=class_label)

    return relabel(train, train_values), relabel(evals, eval_values), names


def _check_batch(batch: dict) -> dict:
    ok, errors = [], []
    for item in batch["image"]:
        try:
            if item is None:
                raise ValueError("empty cell")
            source = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
            with Image.open(source) as image:
                if image.format == "JPEG":
                    # Decoding at 1/8 scale reads and checks the whole entropy-coded stream (a truncated or corrupt
                    # file still fails) for a fraction of the cost of full-size pixels.
                    image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
            ok.append(True)
            errors.append("")
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            ok.append(False)
            errors.append(f"{type(err).__name__}: {first_line(err)}")
    return {"ok": ok, "error": errors}


# Checks of more images than this say up front how long they will take (smaller ones take seconds).
ESTIMATE_ABOVE = 2000
ESTIMATE_SAMPLE = 64


def _log_check_estimate(raw: Dataset, split: str, num_proc: int | None) -> None:
    """Log how long checking `raw` will take, timed on its first images (the progress bar's ETA, said up front)."""
    if len(raw) < ESTIMATE_ABOVE:
        return
    sample = raw.select(range(ESTIMATE_SAMPLE))[:]
    started = time.time()
    _check_batch(sample)
    rate = ESTIMATE_SAMPLE / max(time.time() - started, 1e-6) * (num_proc or 1)
    logger.info("Checking %d %s images (each decoded once): about %.0f s at %.0f images/s", len(raw), split,
                len(raw) / rate, rate)


def find_bad_images(ds: Dataset, split: str, num_proc: int | None = None) -> list[tuple[int, str, str]]:
    """Decode every image of `ds` once and return the unreadable ones as (row, file, error)."""
    raw = ds.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    if num_proc is None:
        # Worker processes pay off only on larger sets; tiny ones check faster in-process.
        num_proc = min(cpu_count(), 8) if len(ds) > 5000 else None
    _log_check_estimate(raw, split, num_proc)
    started = time.time()
    flags = raw.map(_check_batch, batched=True, batch_size=256, remove_columns=["image"], num_proc=num_proc,
                    desc=f"Checking {split} images")
    if len(raw) >= ESTIMATE_ABOVE:
        logger.info("Checked %d %s images in %.0f s", len(raw), split, time.time() - started)
    ok = np.asarray(flags["ok"][:], dtype=bool)
    bad = []
    for row in np.flatnonzero(~ok):
        item = raw[int(row)]["image"] or {}
        bad.append((int(row), item.get("path") or "embedded bytes", flags[int(row)]["error"]))
    return bad


def check_images(named: dict[str, Dataset], policy: str, num_proc: int | None = None
                 ) -> tuple[dict[str, Dataset], dict[str, int]]:
    """Decode every image of every split once; stop on unreadable ones, or drop them when `policy` is "skip".

    Returns:
        The splits without unreadable rows, and how many were dropped from each.

    Raises:
        PipelineError: with policy "error", naming the split, row and file of the first unreadable image and how
            many there are in all.
    """
    bad = {split: find_bad_images(ds, split, num_proc) for split, ds in named.items()}
    total = sum(len(rows) for rows in bad.values())
    if total and policy == "error":
        split, (row, where, error) = next((s, rows[0]) for s, rows in bad.items() if rows)
        raise PipelineError(f"unreadable image in split '{split}', row {row} ({where}): {error}; "
                            f"{total} bad in all: fix or remove them, or set bad_images: skip")
    for split, rows in bad.items():
        if rows:
            logger.warning("Skipping %d unreadable image(s) in split '%s' (first: row %d, %s)", len(rows), split,
                           rows[0][0], rows[0][1])
    kept = {split: ds.select(sorted(set(range(len(ds))) - {r for r, *_ in bad[split]})) if bad[split] else ds
            for split, ds in named.items()}
    return kept, {split: len(rows) for split, rows in bad.items() if rows}


def load_splits(data_args, seed: int, cache_dir: str | None = None, token: str | None = None) -> Splits:
    """Load, pick the train and eval splits, normalise the columns and labels, subsample, and check images.

    Args:
        data_args: a `DataArguments`.
        seed: seeds the held-out split and the subsampling.
        cache_dir: datasets cache folder (default: the datasets default).
        token: Hub token for private or gated datasets.

    Returns:
        A `Splits` with `image` and `label` columns in both splits: a ClassLabel, or for multi-label data (a column
        of lists, `label_columns`, or `problem_type: multi_label_classification`) multi-hot rows.

    Raises:
        PipelineError: for a missing split or column, unknown labels or unreadable images (one line, what to fix).
    """
    raw = load_raw(data_args, cache_dir=cache_dir, token=token)
    if data_args.train_split not in raw:
        raise PipelineError(f"no '{data_args.train_split}' split (splits: {', '.join(raw)}); set train_split")
    train = raw[data_args.train_split]
    if needs_json_label(train.column_names, data_args.label_column_name):
        raw = DatasetDict({split: ds.map(JsonLabel(), desc=f"Reading {split} labels from json")
                           for split, ds in raw.items()})
        train = raw[data_args.train_split]
    image_col = find_column(train, data_args.image_column_name, IMAGE_COLUMNS + WEBDATASET_IMAGE_COLUMNS,
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
        label_cols = [find_column(train, data_args.label_column_name, LABEL_COLUMNS + WEBDATASET_LABEL_COLUMNS,
                                  ClassLabel, "label")]
    multi_label = bool(data_args.label_columns or data_args.label_flag_names) or (
        data_args.problem_type == MULTI_LABEL) or (
        data_args.problem_type is None and is_list_feature(train.features[label_cols[0]]))
    if data_args.problem_type == SINGLE_LABEL and is_list_feature(train.features[label_cols[0]]):
        raise PipelineError(f"label column '{label_cols[0]}' holds lists of labels: set problem_type: "
                            "multi_label_classification (or leave problem_type unset)")

    def canonical(ds: Dataset, split: str) -> Dataset:
        missing = [c for c in (image_col, *label_cols) if c not in ds.column_names]
        if missing:
            raise PipelineError(f"column(s) {missing} missing from split '{split}' (columns: "
                                f"{', '.join(ds.column_names)})")
        ds = ds.select_columns([image_col, *label_cols])
        if data_args.label_columns:
            # Several 0/1 columns become one multi-hot `label` column, classes named after the columns.
            ds = with_multi_hot(ds, label_cols, columns_to_multi_hot(ds, label_cols, split))
            return ds.rename_columns({image_col: "image"}) if image_col != "image" else ds
        return ds.rename_columns({c: n for c, n in ((image_col, "image"), (label_cols[0], "label")) if c != n})

    def encode(train: Dataset, evals: Dataset, eval_name: str) -> tuple[Dataset, Dataset, list[str]]:
        if data_args.label_columns:
            return train, evals, label_cols
        if data_args.label_flag_names:
            return (*flag_vectors_to_multi_hot(train, evals, eval_name, list(data_args.label_flag_names)),
                    list(data_args.label_flag_names))
        if multi_label:
            return encode_label_lists(train, evals, eval_name)
        return encode_labels(train, evals, eval_name)

    train = canonical(train, data_args.train_split)
    eval_name = data_args.eval_split or next((s for s in EVAL_SPLITS if s in raw and s != data_args.train_split), None)
    if data_args.eval_split and data_args.eval_split not in raw:
        raise PipelineError(f"no '{data_args.eval_split}' split (splits: {', '.join(raw)}); fix eval_split")
    if eval_name is not None:
        evals = canonical(raw[eval_name], eval_name)
        train, evals, labels = encode(train, evals, eval_name)
    elif multi_label:
        # Iterative stratification: every class keeps about its share of positives in both parts.
        train, _, labels = encode(train, train.select([]), "train")
        train_rows, eval_rows = iterative_split(label_matrix(train), data_args.train_val_split, seed)
        train, evals = train.select(train_rows), train.select(eval_rows)
        eval_name = f"{data_args.train_split} ({data_args.train_val_split:.0%} held out, seed {seed})"
    else:
        # Encode first so the held-out split can be stratified on a ClassLabel column.
        train, _, labels = encode(train, train.select([]), "train")
        counts = Counter(_label_values(train))
        stratify = "label" if min(counts.values()) >= 2 and len(counts) > 1 else None
        if stratify is None:
            logger.warning("Some class has a single image: the held-out split is not stratified")
        parts = train.train_test_split(test_size=data_args.train_val_split, stratify_by_column=stratify, seed=seed)
        train, evals = parts["train"], parts["test"]
        eval_name = f"{data_args.train_split} ({data_args.train_val_split:.0%} held out, seed {seed})"
    if data_args.max_train_samples is not None and data_args.max_train_samples < len(train):
        train = train.shuffle(seed=seed).select(range(data_args.max_train_samples))
    if data_args.max_eval_samples is not None and data_args.max_eval_samples < len(evals):
        evals = evals.shuffle(seed=seed).select(range(data_args.max_eval_samples))
    if len(train) == 0 or len(evals) == 0:
        raise PipelineError(f"empty split after loading (train {len(train)} rows, eval {len(evals)} rows): check "
                            "the data and max_*_samples")

    skipped: dict[str, int] = {}
    if data_args.verify_images and data_args.pixel_cache and data_args.fast_transforms:
        # One decode pass, not two: building the pixel cache checks every image (`transforms.drop_unreadable`).
        logger.info("Images are checked while the pixel cache is built (one decode pass)")
    elif data_args.verify_images:
        # Keys name the splits in messages; evaluating on train itself still checks two distinct selections.
        eval_key = eval_name if eval_name != "train" else "train (eval)"
        checked, skipped = check_images({"train": train, eval_key: evals}, data_args.bad_images,
                                        data_args.preprocessing_num_workers)
        train, evals = checked["train"], checked[eval_key]

    no_positive = {}
    if multi_label:
        no_positive = {"train": no_positive_count(train), eval_name: no_positive_count(evals)}
        logger.info("Multi-label: %d classes; images with no positive label: %d of %d train, %d of %d eval",
                    len(labels), no_positive["train"], len(train), no_positive[eval_name], len(evals))

    name = data_args.dataset_name
    return Splits(
        train=train,
        eval=evals,
        labels=labels,
        eval_split_name=eval_name,
        hub_id=name if is_hub_id(name) else None,
        config_name=data_args.dataset_config_name,
        skipped_images=skipped,
        multi_label=multi_label,
        no_positive=no_positive,
    )

