"""Multi-label data: a `label` column of multi-hot rows (one 0/1 float per class), from either a column of lists
(`Sequence(ClassLabel)`, lists of strings, lists of integers) or several 0/1 columns (`label_columns`), and a seeded
iterative stratification for the held-out split.

The iterative stratification is written here (Sechidis, Tsoumakas and Vlahavas, "On the stratification of
multi-label data", ECML PKDD 2011, the algorithm scikit-multilearn's `IterativeStratification` implements): no
maintained package ships it with current numpy and scikit-learn.
"""

from __future__ import annotations

import logging
import math
from numbers import Integral

import datasets
import numpy as np
from datasets import ClassLabel, Dataset

from vit_pipeline import PipelineError

logger = logging.getLogger(__name__)

INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def multi_hot_feature(num_labels: int) -> datasets.List:
    """The feature of the canonical multi-label `label` column: a fixed-length list of float32 0/1 values."""
    return datasets.List(datasets.Value("float32"), length=num_labels)


def is_list_feature(feature) -> bool:
    """True for a column whose rows are lists (`Sequence` / `List` / `LargeList`)."""
    return isinstance(feature, (datasets.List, datasets.LargeList))


def is_multi_hot(feature) -> bool:
    """True for the canonical multi-label `label` feature (`multi_hot_feature`)."""
    return is_list_feature(feature) and isinstance(feature.feature, datasets.Value) and \
        feature.feature.dtype == "float32" and getattr(feature, "length", -1) > 0


def _values(ds: Dataset, column: str) -> list:
    return ds.select_columns([column]).with_format(None)[column][:]


def _item_names(feature, values: list, split: str) -> list[list[str]]:
    """Each row's labels as class names (strings), from a list column or a scalar column (one label a row)."""
    inner = feature.feature if is_list_feature(feature) else feature
    names = inner.names if isinstance(inner, ClassLabel) else None
    if not isinstance(inner, (ClassLabel, datasets.Value)) or (
            isinstance(inner, datasets.Value) and inner.dtype not in ("string", "large_string", *INTEGER_DTYPES)):
        raise PipelineError(f"label column has type {feature}: use lists of class names or ids, or label_columns")
    rows = []
    for row, value in enumerate(values):
        if value is None:
            raise PipelineError(f"split '{split}' row {row} has no label (None): give it a list (empty for no "
                                "positive label) or drop it")
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            if item is None or (isinstance(item, Integral) and not isinstance(item, bool) and item < 0
                                and names is not None):
                raise PipelineError(f"split '{split}' row {row} holds an empty label ({item!r}) in {value!r}: "
                                    "remove it from the list")
            if names is not None:
                if not isinstance(item, Integral) or not 0 <= item < len(names):
                    raise PipelineError(f"split '{split}' row {row} holds class id {item!r}, outside the "
                                        f"{len(names)} class names of the column: fix the row or the names")
                out.append(names[item])
            else:
                out.append(str(item))
        rows.append(out)
    return rows


def _check_same_kind(feature, eval_feature, eval_name: str) -> None:
    if is_list_feature(feature) != is_list_feature(eval_feature):
        lists, scalars = ("train", eval_name) if is_list_feature(feature) else (eval_name, "train")
        raise PipelineError(f"mixed list and scalar labels: split '{lists}' holds lists of labels, split "
                            f"'{scalars}' one label a row; give every row a list (one class: a list of one)")


def _class_names(feature, train_rows: list[list[str]]) -> list[str]:
    inner = feature.feature if is_list_feature(feature) else feature
    if isinstance(inner, ClassLabel):
        return list(inner.names)
    present = {name for row in train_rows for name in row}
    if isinstance(inner, datasets.Value) and inner.dtype in INTEGER_DTYPES:
        return [str(v) for v in sorted(int(n) for n in present)]  # numbers as numbers: "2" before "10"
    return sorted(present)


def _to_multi_hot(rows: list[list[str]], index: dict[str, int]) -> np.ndarray:
    out = np.zeros((len(rows), len(index)), dtype=np.float32)
    for i, row in enumerate(rows):
        out[i, [index[name] for name in row]] = 1.0
    return out


def with_multi_hot(ds: Dataset, drop: list[str], multi_hot: np.ndarray) -> Dataset:
    """`ds` without the columns `drop`, with `label` holding the rows of `multi_hot` (no image bytes rewritten)."""
    # add_column joins a new Arrow column without rewriting the image bytes (map would copy them all).
    return ds.remove_columns(drop).add_column("label", multi_hot.tolist(), feature=multi_hot_feature(
        multi_hot.shape[1]))


def encode_label_lists(train: Dataset, evals: Dataset, eval_name: str) -> tuple[Dataset, Dataset, list[str]]:
    """Turn the `label` column of both splits (lists of class names or ids, or one label a row) into multi-hot rows.

    ClassLabel names are kept (in order); strings become sorted class names; integers their own names ("0", "7").

    Raises:
        PipelineError: a row without a label, an id outside the ClassLabel names, lists in one split and scalars
            in the other, eval classes that train never has (named).
    """
    feature, eval_feature = train.features["label"], evals.features["label"]
    _check_same_kind(feature, eval_feature, eval_name)
    train_rows = _item_names(feature, _values(train, "label"), "train")
    eval_rows = _item_names(eval_feature, _values(evals, "label"), eval_name)
    names = _class_names(feature, train_rows)
    known = set(names)
    unknown = sorted({name for row in train_rows + eval_rows for name in row} - known)
    if unknown:
        split = eval_name if any(n in unknown for row in eval_rows for n in row) else "train"
        raise PipelineError(f"split '{split}' has labels that train never has: {unknown}; add training images for "
                            "them or remove them from those rows")
    index = {name: i for i, name in enumerate(names)}
    return (with_multi_hot(train, ["label"], _to_multi_hot(train_rows, index)),
            with_multi_hot(evals, ["label"], _to_multi_hot(eval_rows, index)), names)


def flag_vectors_to_multi_hot(train: Dataset, evals: Dataset, eval_name: str, names: list[str]
                              ) -> tuple[Dataset, Dataset]:
    """Turn a `label` column of 0/1 vectors (one flag per class, in the order of `names`) into multi-hot rows.

    Raises:
        PipelineError: a row that is not a list, has another length than `names`, or holds a value other than 0/1.
    """
    out = []
    for ds, split in ((train, "train"), (evals, eval_name)):
        values = _values(ds, "label")
        for row, value in enumerate(values):
            if not isinstance(value, list) or len(value) != len(names):
                shown = f"{len(value)} flags" if isinstance(value, list) else repr(value)
                raise PipelineError(f"split '{split}' row {row} holds {shown} where label_flag_names has "
                                    f"{len(names)} classes: each row needs one 0/1 flag per name")
            bad = [v for v in value if v is None or v not in (0, 1)]
            if bad:
                raise PipelineError(f"split '{split}' row {row} holds {bad[0]!r} in its 0/1 flags: "
                                    "label_flag_names takes vectors of 0/1 values only")
        out.append(with_multi_hot(ds, ["label"], np.asarray(values, dtype=np.float32).reshape(len(values), -1)))
    return out[0], out[1]


def columns_to_multi_hot(ds: Dataset, columns: list[str], split: str) -> np.ndarray:
    """Stack 0/1 columns (integers, booleans, floats equal to 0 or 1, or two-class ClassLabels) into multi-hot rows.

    Raises:
        PipelineError: a column of another type, or a value other than 0/1 (named with its split and row).
    """
    out = np.zeros((len(ds), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        feature = ds.features[column]
        if isinstance(feature, ClassLabel) and feature.num_classes != 2:
            raise PipelineError(f"label column '{column}' is a ClassLabel with {feature.num_classes} classes: "
                                "label_columns take 0/1 columns")
        if not isinstance(feature, (ClassLabel, datasets.Value)) or (
                isinstance(feature, datasets.Value) and feature.dtype not in ("bool", "float32", "float64",
                                                                              *INTEGER_DTYPES)):
            raise PipelineError(f"label column '{column}' has type {feature}: label_columns take 0/1 columns")
        values = _values(ds, column)
        for row, value in enumerate(values):
            if value is None or (isinstance(value, float) and math.isnan(value)) or value not in (0, 1):
                raise PipelineError(f"label column '{column}' holds {value!r} in split '{split}', row {row}: "
                                    "label_columns take 0/1 values only (fix the row, or map it to 0 or 1)")
        out[:, j] = np.asarray(values, dtype=np.float32)
    return out


def label_matrix(ds: Dataset) -> np.ndarray:
    """The multi-hot `label` column of `ds` as an (n, classes) float32 array (no image decoded)."""
    values = _values(ds, "label")
    return np.asarray(values, dtype=np.float32).reshape(len(values), -1)


def no_positive_count(ds: Dataset) -> int:
    """How many rows of a multi-hot `label` column have no positive label (a "no finding" image)."""
    return int((label_matrix(ds).sum(1) == 0).sum())


def iterative_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into train and test parts, keeping each class's share of positives close to `test_fraction`.

    Iterative stratification (Sechidis et al. 2011): the class with the fewest positives left is placed first, each
    of its rows going to the part that most lacks that class; rows without a positive label fill the parts to their
    sizes. Then every class with at least two positives is made present in both parts, by moving one row over
    (one whose other classes keep a positive where it leaves). Seeded: the same data and seed give the same split.

    Args:
        y: (n, classes) 0/1 matrix.
        test_fraction: share of rows in the test part, in (0, 1).
        seed: random seed (ties and the order of rows are drawn from it).

    Returns:
        The sorted row indices of the train part and of the test part.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y) > 0.5
    n, classes = y.shape
    ratios = np.array([1.0 - test_fraction, test_fraction])
    wanted_rows = ratios * n
    wanted = np.outer(ratios, y.sum(0)).astype(np.float64)  # (2 parts, classes) positives each part still wants
    part = np.full(n, -1)
    left = np.ones(n, dtype=bool)

    def pick(scores: np.ndarray, fallback: np.ndarray) -> int:
        best = np.flatnonzero(scores == scores.max())
        if len(best) > 1:
            best = best[fallback[best] == fallback[best].max()]
        return int(rng.choice(best))

    while True:
        counts = y[left].sum(0)
        if not counts.any():
            break
        rarest = np.flatnonzero(counts == counts[counts > 0].min())
        label = int(rng.choice(rarest[counts[rarest] > 0]))
        for row in rng.permutation(np.flatnonzero(left & y[:, label])):
            chosen = pick(wanted[:, label], wanted_rows)
            part[row], left[row] = chosen, False
            wanted[chosen, y[row]] -= 1
            wanted_rows[chosen] -= 1
    for row in rng.permutation(np.flatnonzero(left)):
        chosen = pick(wanted_rows, wanted_rows)
        part[row] = chosen
        wanted_rows[chosen] -= 1

    # Every class with two or more positives present in both parts.
    for label in rng.permutation(classes):
        for target in (1, 0):
            source = 1 - target
            if y[part == target, label].any() or y[:, label].sum() < 2:
                continue
            rows = np.flatnonzero((part == source) & y[:, label])
            safe = [r for r in rows if all(y[(part == source) & y[:, c], c].sum() > 1 for c in np.flatnonzero(y[r]))]
            part[int(rng.choice(safe or rows))] = target
    return np.flatnonzero(part == 0), np.flatnonzero(part == 1)
