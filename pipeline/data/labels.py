"""Which columns hold the image and the label, and single-label classes as one ClassLabel shared by both splits.

The usual column names (Hub datasets, imagefolder, WebDataset shards), WebDataset labels inside a `.json` member,
and `encode_labels`. Multi-label columns are `vit_pipeline.data.multilabel`'s.
"""

from __future__ import annotations

import datasets
from datasets import ClassLabel, Dataset

from vit_pipeline import PipelineError
from vit_pipeline.data.multilabel import is_list_feature

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


def find_column(columns: list[str], features: dict, given: str | None, candidates: tuple[str, ...],
                feature_type: type, what: str, where: str | None = None) -> str:
    """Return the column to use for `what`: the one given, else a usual name, else the first of `feature_type`.

    Args:
        columns, features: the dataset's (or stream's) column names and features.
        where: "the stream" for a stream (named in the messages); None: "the dataset".

    Raises:
        PipelineError: the given column is missing, or no column qualifies (set `<what>_column_name`).
    """
    if given is not None:
        if given not in columns:
            raise PipelineError(f"{what} column '{given}' not in {where or 'the dataset'} (columns: "
                                f"{', '.join(columns)}); set {what}_column_name to one of them")
        return given
    for name in candidates:
        if name in columns:
            return name
    for name, feature in features.items():
        # A list of that type counts too: `Sequence(ClassLabel)` is a multi-label column.
        if isinstance(feature, feature_type) or (is_list_feature(feature) and isinstance(feature.feature,
                                                                                          feature_type)):
            return name
    raise PipelineError(f"no {what} column found{' in ' + where if where else ''} (columns: {', '.join(columns)}); "
                        f"set {what}_column_name")


def label_values(ds: Dataset) -> list:
    """The `label` column as a plain list."""
    return ds.select_columns(["label"]).with_format(None)["label"][:]


def encode_labels(train: Dataset, evals: Dataset, eval_name: str) -> tuple[Dataset, Dataset, list[str]]:
    """Make `label` a ClassLabel shared by both splits.

    ClassLabel names are kept; strings become sorted class names; integers become their own names ("0", "7", ...).

    Raises:
        PipelineError: rows without a label, or eval labels that never occur in train (named).
    """
    feature = train.features["label"]
    train_values, eval_values = label_values(train), label_values(evals)
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

