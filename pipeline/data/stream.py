"""Streaming data (`streaming: true`): train from a `datasets.IterableDataset` without downloading the whole set.

A Hub id, a local folder of parquet files or of WebDataset shards (`.tar` of `jpg`/`png` + `cls`/`json`), an
imagefolder or a `save_to_disk` folder is opened as a stream: rows are read shard by shard as training consumes them,
so the time to the first step does not depend on the dataset's size. What the map-style path does before training
happens here as the rows stream, bounded:

- labels come from the features (a `ClassLabel`), else from a first pass over at most `streaming_label_rows` rows
  (said in the log); a later row with a label that pass never saw is skipped;
- the eval split is read once, at most `max_eval_samples` rows (1,000 by default), into an ordinary `Dataset`; with no
  eval split, a seeded hash of each image's bytes holds out `train_val_split` of the rows, the same rows every epoch;
- the training stream is shuffled with a seeded buffer (`shuffle_buffer_size`) and its shards are split across
  processes (`datasets.distributed.split_dataset_by_node`) and then across each process's loader workers;
- each image is decoded as its row arrives: an unreadable one is skipped and counted (`bad_images: skip`) or stops
  the run naming its row (`bad_images: error`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, IterableDataset

from vit_pipeline import PipelineError
from vit_pipeline.data.labels import (
    IMAGE_COLUMNS,
    LABEL_COLUMNS,
    WEBDATASET_IMAGE_COLUMNS,
    WEBDATASET_LABEL_COLUMNS,
    JsonLabel,
    find_column,
    needs_json_label,
)
from vit_pipeline.data.sources import open_stream
from vit_pipeline.data.splits import EVAL_SPLITS, StreamSplits
from vit_pipeline.utils import first_line, is_hub_id

logger = logging.getLogger(__name__)

DEFAULT_STREAM_EVAL_ROWS = 1000


def _columns(ds: IterableDataset) -> tuple[list[str], dict]:
    features = ds.features
    if features is None:
        # No metadata: the first row names the columns (one row read).
        row = next(iter(ds), None)
        if row is None:
            raise PipelineError("the training stream is empty: check the dataset and train_split")
        return list(row), {}
    return list(features), dict(features)


def canonical_columns(ds, image_column: str | None, label_column: str | None):
    """`ds` (map-style or streaming) with only `image` (left encoded) and `label` columns.

    Understands WebDataset columns: `jpg`/`jpeg`/`png`/`webp` images, `cls` labels, or a `json` member with a
    `label` (`labels`, `cls`, `class`) key.
    """
    if isinstance(ds, IterableDataset):
        columns, features = _columns(ds)
    else:
        columns, features = list(ds.column_names), dict(ds.features)
    image_col = find_column(columns, features, image_column, IMAGE_COLUMNS + WEBDATASET_IMAGE_COLUMNS,
                            datasets.Image, "image", where="the stream")
    if isinstance(features.get(image_col), datasets.Image):
        # Rows carry the encoded bytes: the loader workers decode them (torchvision), not datasets (PIL).
        ds = ds.cast_column(image_col, datasets.Image(decode=False))
    if needs_json_label(columns, label_column) and not any(isinstance(f, ClassLabel) for f in features.values()):
        ds = ds.map(JsonLabel("json"))
        columns = [*columns, "label"]
        features = {**features, "label": None}
        label_col = "label"
    else:
        label_col = find_column(columns, features, label_column, LABEL_COLUMNS + WEBDATASET_LABEL_COLUMNS,
                                ClassLabel, "label", where="the stream")
    if isinstance(features.get(label_col), (datasets.List, datasets.LargeList)):
        raise PipelineError(f"label column '{label_col}' holds lists of labels (multi-label): streaming is "
                            "single-label only; load it without streaming (streaming: false)")
    ds = ds.select_columns([image_col, label_col])
    renames = {c: n for c, n in ((image_col, "image"), (label_col, "label")) if c != n}
    if renames:
        ds = ds.rename_columns(renames)
    return ds


def _image_key(cell) -> bytes:
    if isinstance(cell, dict):
        return cell.get("bytes") or (cell.get("path") or "").encode()
    return str(cell).encode()


class HoldOut:
    """`filter` predicate: True for the rows a seeded hash of the image puts in the held-out fraction."""

    def __init__(self, fraction: float, seed: int, held: bool):
        self.threshold, self.seed, self.held = int(fraction * 2**32), seed, held

    def __call__(self, row: dict) -> bool:
        return (zlib.crc32(_image_key(row["image"]), self.seed & 0xFFFFFFFF) < self.threshold) == self.held


def _label_names(train: IterableDataset, eval_rows: list[dict], sample_rows: int) -> tuple[list[str], int]:
    """Sorted label names from the first `sample_rows` training rows and the eval rows (numbers sort as numbers)."""
    seen, count = set(), 0
    for row in train.select_columns(["label"]).take(sample_rows):
        seen.add(row["label"])
        count += 1
    seen |= {row["label"] for row in eval_rows}
    if None in seen:
        raise PipelineError("the stream has rows without a label (None): drop them or pick another label column")
    return [str(v) for v in sorted(seen)], count


class LabelIndex:
    """Batched `map`: label values to ClassLabel indices; rows whose label is not in `names` are dropped."""

    def __init__(self, names: list[str]):
        self.index = {name: i for i, name in enumerate(names)}
        self.dropped = 0

    def __call__(self, batch: dict) -> dict:
        keep = [i for i, v in enumerate(batch["label"]) if str(v) in self.index]
        if len(keep) < len(batch["label"]):
            if not self.dropped:
                logger.warning("Skipping training rows whose label the first pass did not see (first: %r); raise "
                               "streaming_label_rows to include it", next(
                                   v for v in batch["label"] if str(v) not in self.index))
            self.dropped += len(batch["label"]) - len(keep)
        return {"image": [batch["image"][i] for i in keep],
                "label": [self.index[str(batch["label"][i])] for i in keep]}


def _split_rows(info, split: str) -> int | None:
    splits = getattr(info, "splits", None) or {}
    found = splits.get(split) if hasattr(splits, "get") else None
    rows = getattr(found, "num_examples", None)
    return int(rows) if rows else None


def stream_splits(data_args, seed: int, rank: int = 0, world_size: int = 1, token: str | None = None
                  ) -> StreamSplits:
    """Open the training stream and read the bounded eval split; labels from the features or a first pass.

    Args:
        data_args: a `DataArguments` with `streaming: true`.
        seed: seeds the shuffle buffer, the shard order and the held-out rows.
        rank, world_size: this process and the number of processes; each process streams its own shards.
        token: Hub token for private or gated datasets.

    Returns:
        A `StreamSplits`: `train` yields `{"image": encoded cell, "label": int}` rows, this process's share, shuffled;
        `eval` is an ordinary `Dataset` (ClassLabel labels, at most `max_eval_samples` rows).

    Raises:
        PipelineError: a missing split or column, an empty eval split, rows without labels.
    """
    raw = open_stream(data_args, token=token)
    if data_args.train_split not in raw:
        raise PipelineError(f"no '{data_args.train_split}' split in the stream (splits: {', '.join(raw)}); set "
                            "train_split")
    train_raw = raw[data_args.train_split]
    train_rows = _split_rows(train_raw.info, data_args.train_split)
    train = canonical_columns(train_raw, data_args.image_column_name, data_args.label_column_name)
    train, evals, eval_name, train_rows = _eval_stream(raw, train, train_rows, data_args, seed)
    eval_rows = _read_eval_rows(evals, eval_name, data_args)
    train, names = _index_labels(train, eval_rows, data_args)
    eval_features = datasets.Features({"image": datasets.Image(), "label": ClassLabel(names=names)})
    eval_ds = Dataset.from_list([{"image": _local_cell(r["image"]), "label": r["label"]} for r in eval_rows],
                                features=eval_features)
    train = _shuffle_and_shard(train, data_args, seed, rank, world_size)
    name = data_args.dataset_name
    return StreamSplits(train=train, eval=eval_ds, labels=names, eval_split_name=eval_name, train_rows=train_rows,
                        hub_id=name if is_hub_id(name) else None, config_name=data_args.dataset_config_name)


def _eval_stream(raw, train: IterableDataset, train_rows: int | None, data_args, seed: int
                 ) -> tuple[IterableDataset, IterableDataset, str, int | None]:
    """The eval split's stream and its name: `eval_split`, a usual eval split name, or train rows held out by hash
    (then the training stream without them, and its row count scaled down)."""
    eval_name = data_args.eval_split or next((s for s in EVAL_SPLITS if s in raw and s != data_args.train_split),
                                             None)
    if data_args.eval_split and data_args.eval_split not in raw:
        raise PipelineError(f"no '{data_args.eval_split}' split in the stream (splits: {', '.join(raw)}); fix "
                            "eval_split")
    if eval_name is not None:
        evals = canonical_columns(raw[eval_name], data_args.image_column_name, data_args.label_column_name)
        return train, evals, eval_name, train_rows
    # Held out by a hash of the image bytes: the same rows every epoch and on every process, never trained on.
    evals = train.filter(HoldOut(data_args.train_val_split, seed, held=True))
    train = train.filter(HoldOut(data_args.train_val_split, seed, held=False))
    if train_rows:
        train_rows = round(train_rows * (1 - data_args.train_val_split))
    eval_name = f"{data_args.train_split} ({data_args.train_val_split:.0%} held out by image hash, seed {seed})"
    return train, evals, eval_name, train_rows


def _read_eval_rows(evals: IterableDataset, eval_name: str, data_args) -> list[dict]:
    """The first `max_eval_samples` eval rows (1,000 by default), in memory."""
    eval_rows_max = data_args.max_eval_samples or DEFAULT_STREAM_EVAL_ROWS
    eval_rows = list(evals.take(eval_rows_max))
    if not eval_rows:
        raise PipelineError(f"the eval split '{eval_name}' is empty: check the data or set eval_split")
    logger.info("Streaming: eval split %s read into memory (%d rows, at most %d: max_eval_samples)", eval_name,
                len(eval_rows), eval_rows_max)
    return eval_rows


def _index_labels(train: IterableDataset, eval_rows: list[dict], data_args) -> tuple[IterableDataset, list[str]]:
    """The class names (a ClassLabel's, else a first pass's), with train and eval labels as their indices."""
    feature = (train.features or {}).get("label")
    if isinstance(feature, ClassLabel):
        return train, list(feature.names)
    names, sampled = _label_names(train, eval_rows, data_args.streaming_label_rows)
    logger.info("Streaming: %d label(s) from a first pass over %d training rows (streaming_label_rows: %d) and "
                "the eval rows: %s", len(names), sampled, data_args.streaming_label_rows,
                ", ".join(names[:20]) + (" ..." if len(names) > 20 else ""))
    train = train.map(LabelIndex(names), batched=True, batch_size=256)
    index = {name: i for i, name in enumerate(names)}
    for row in eval_rows:
        row["label"] = index[str(row["label"])]
    return train, names


def _shuffle_and_shard(train: IterableDataset, data_args, seed: int, rank: int, world_size: int) -> IterableDataset:
    """Shuffle (seeded: shard order and buffer), then give each process its shards."""
    if data_args.shuffle_buffer_size > 0:
        # One input shard at a time: datasets cannot restore the state of interleaved shards in loader workers.
        train = train.shuffle(seed=seed, buffer_size=data_args.shuffle_buffer_size, max_buffer_input_shards=1)
    if world_size > 1:
        from datasets.distributed import split_dataset_by_node

        if train.n_shards % world_size:
            logger.warning("The stream has %d shard(s) for %d processes: every process reads every row and keeps "
                           "1 in %d (a multiple of %d shards avoids it)", train.n_shards, world_size, world_size,
                           world_size)
        train = split_dataset_by_node(train, rank=rank, world_size=world_size)
    return train


def _local_cell(cell):
    """An encoded image cell with its bytes in it: a remote path (a streamed Hub imagefolder) is read now."""
    if isinstance(cell, dict) and not cell.get("bytes") and cell.get("path") and not Path(cell["path"]).is_file():
        from datasets.utils.file_utils import xopen

        with xopen(cell["path"], "rb") as file:
            return {"bytes": file.read(), "path": cell["path"]}
    return cell


class StreamTransform:
    """Batched `IterableDataset.map`: decode each image as its row streams, then the uint8 train steps.

    Rows out: `{"pixel_values": uint8 3xHxW tensor, "label": int}`. An unreadable image is dropped and counted
    (`policy: skip`) or stops the run with its row (`policy: error`).
    """

    def __init__(self, transform: Callable, policy: str = "error"):
        self.transform, self.policy = transform, policy
        self.rows = 0
        self.skipped = 0

    def __call__(self, batch: dict) -> dict:
        from vit_pipeline.data.decode import decode_rgb

        pixels, labels = [], []
        for cell, label in zip(batch["image"], batch["label"], strict=True):
            self.rows += 1
            try:
                if cell is None:
                    raise ValueError("empty cell")
                image = decode_rgb(_local_cell(cell))
            except Exception as err:  # PIL and torchvision raise many types for bad files
                where = (cell.get("path") if isinstance(cell, dict) else None) or "embedded bytes"
                if self.policy == "error":
                    raise PipelineError(f"unreadable image in the training stream, row {self.rows} of this "
                                        f"reader ({where}): {type(err).__name__}: {first_line(err)}; fix or remove "
                                        "it, or set bad_images: skip") from None
                self.skipped += 1
                logger.warning("Skipping unreadable image in the training stream (%s): %s; %d skipped so far by "
                               "this reader", where, first_line(err), self.skipped)
                continue
            pixels.append(self.transform(image).contiguous())
            labels.append(label)
        return {"pixel_values": pixels, "label": labels}


def prepare_stream(train: IterableDataset, image_processor, data_args) -> IterableDataset:
    """The training stream as `collate` takes it: decoded and augmented (uint8) row by row in the loader workers."""
    from vit_pipeline.data.transforms import build_fast_transforms

    transform = build_fast_transforms(image_processor, data_args)[0]
    return train.map(StreamTransform(transform, data_args.bad_images), batched=True, batch_size=16,
                     remove_columns=["image", "label"])
