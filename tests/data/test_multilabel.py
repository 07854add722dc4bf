"""Multi-label data: every label layout becomes multi-hot rows, the held-out split is stratified per class and seeded,
"no finding" images are counted, and every malformed label is one clear line."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from tests.conftest import DIGIT_TAGS, digit_tags, digits, write_parquet_repo
from vit_pipeline import PipelineError
from vit_pipeline.config import DataArguments
from vit_pipeline.data.load import load_splits
from vit_pipeline.data.multilabel import iterative_split, label_matrix


def load(**kwargs):
    return load_splits(DataArguments(**kwargs), seed=0)


def expected_matrix(rows) -> np.ndarray:
    return np.array([[float(t in digit_tags(d)) for t in DIGIT_TAGS] for _, d in rows], dtype=np.float32)


def repo(tmp_path, train, evals=None, eval_split="validation"):
    splits = {"train": train} if evals is None else {"train": train, eval_split: evals}
    return str(write_parquet_repo(tmp_path / "data", splits))


def test_sequence_of_classlabel_column_is_detected(tagged_digits_parquet):
    # No test part held out of train here: the train rows are the file's, in its order.
    splits = load(dataset_name=str(tagged_digits_parquet), test_split="none")
    assert splits.multi_label and splits.labels == DIGIT_TAGS
    assert splits.train.features["label"] == datasets.List(datasets.Value("float32"), length=3)
    assert splits.train.column_names == ["image", "label"]
    np.testing.assert_array_equal(label_matrix(splits.train), expected_matrix(digits(n_per_class=30, seed=0)))
    # Digits 1 and 3 have no tag: 2 classes of 10, so a fifth of the images are "no finding".
    assert splits.no_positive == {"train": 60, "validation": 20}


@pytest.mark.parametrize("kind", ["strings", "integers"])
def test_lists_of_strings_or_integers(kind, tmp_path):
    rows = digits(n_per_class=3)
    if kind == "strings":
        values = [digit_tags(d) for _, d in rows]
        names = sorted(DIGIT_TAGS)
    else:  # the tags' positions, as plain integers: class names are the numbers
        values = [[DIGIT_TAGS.index(t) * 5 for t in digit_tags(d)] for _, d in rows]
        names = ["0", "5", "10"]
    ds = datasets.Dataset.from_dict({"image": [im for im, _ in rows], "labels": values},
                                    features=datasets.Features({"image": datasets.Image(), "labels": datasets.List(
                                        datasets.Value("string" if kind == "strings" else "int64"))}))
    splits = load(dataset_name=repo(tmp_path, ds, ds))
    assert splits.multi_label and splits.labels == names
    matrix = label_matrix(splits.eval)
    order = [sorted(DIGIT_TAGS).index(t) for t in DIGIT_TAGS] if kind == "strings" else [0, 1, 2]
    np.testing.assert_array_equal(matrix[:, order], expected_matrix(rows))


def test_zero_one_columns_with_label_columns(tmp_path):
    rows = digits(n_per_class=3)
    table = {"image": [im for im, _ in rows]}
    # Int, bool and two-class ClassLabel columns, as CSV-born and Hub-born sets have them.
    table["even"] = [int(d % 2 == 0) for _, d in rows]
    table["greater_than_4"] = [d > 4 for _, d in rows]
    table["loop"] = [int(d in (0, 6, 8, 9)) for _, d in rows]
    table["path"] = [f"{i}.png" for i in range(len(rows))]
    features = datasets.Features({"image": datasets.Image(), "even": datasets.Value("int64"),
                                  "greater_than_4": datasets.Value("bool"),
                                  "loop": datasets.ClassLabel(names=["negative", "positive"]),
                                  "path": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(table, features=features)
    splits = load(dataset_name=repo(tmp_path, ds), label_columns=DIGIT_TAGS, train_val_split=0.25)
    assert splits.multi_label and splits.labels == DIGIT_TAGS
    both = np.concatenate([label_matrix(splits.train), label_matrix(splits.eval), label_matrix(splits.test)])
    assert both.sum(0).tolist() == expected_matrix(rows).sum(0).tolist()
    assert splits.train.column_names == ["image", "label"]


def test_problem_type_makes_single_labels_multi_label(digits_folder):
    splits = load(dataset_name=str(digits_folder), problem_type="multi_label_classification")
    assert splits.multi_label and splits.labels == [str(d) for d in range(10)]
    matrix = label_matrix(splits.train)
    assert (matrix.sum(1) == 1).all() and splits.no_positive["train"] == 0


def test_held_out_split_keeps_every_class_in_both_parts_and_is_seeded(tmp_path):
    # One rare class (2 positives of 120): a random split would usually leave it out of the eval part.
    rows = digits(n_per_class=12)
    values = [digit_tags(d) + (["rare"] if i in (5, 77) else []) for i, (_, d) in enumerate(rows)]
    ds = datasets.Dataset.from_dict({"image": [im for im, _ in rows], "labels": values})
    data = repo(tmp_path, ds)
    a = load(dataset_name=data, train_val_split=0.2)
    b = load(dataset_name=data, train_val_split=0.2)
    assert label_matrix(a.eval).tolist() == label_matrix(b.eval).tolist()
    # The eval part (20%), then the test part (10% of the rest), both held out iteratively.
    assert len(a.eval) + len(a.train) + len(a.test) == 120 and abs(len(a.eval) - 24) <= 1
    train, evals, test = label_matrix(a.train), label_matrix(a.eval), label_matrix(a.test)
    assert (train.sum(0) > 0).all() and (evals.sum(0) > 0).all() and abs(len(a.test) - 10) <= 1
    # Every class keeps about its 20% share in the eval part.
    share = evals.sum(0) / (train.sum(0) + evals.sum(0) + test.sum(0))
    assert np.all(np.abs(share[:3] - 0.2) < 0.05), share
    other_seed = load_splits(DataArguments(dataset_name=data, train_val_split=0.2), seed=1)
    assert label_matrix(other_seed.eval).tolist() != label_matrix(a.eval).tolist()


def test_iterative_split_sizes_and_no_positive_rows():
    rng = np.random.default_rng(0)
    y = (rng.random((500, 6)) < [0.5, 0.2, 0.05, 0.01, 0.3, 0.0]).astype(np.float32)
    train, test = iterative_split(y, 0.3, seed=3)
    assert len(train) + len(test) == 500 and not set(train) & set(test)
    assert abs(len(test) - 150) <= 3
    for c in range(5):
        assert y[test, c].sum() > 0 and y[train, c].sum() > 0
        # Within one image of the class's exact share (or 5% of its positives, for the common classes).
        assert abs(y[test, c].sum() - 0.3 * y[:, c].sum()) <= max(1.0, 0.05 * y[:, c].sum())


@pytest.mark.parametrize("case, message", [
    ("unknown class in a list", "split 'validation' has labels that train never has: ['square']"),
    ("mixed list and scalar", "mixed list and scalar labels: split 'train' holds lists of labels, split 'validation' "
                              "one label a row"),
    ("0/1 column with a 2", "label column 'loop' holds 2 in split 'train', row 3: label_columns take 0/1 values only"),
    ("lists with single_label", "label column 'labels' holds lists of labels: set problem_type: "
                                "multi_label_classification"),
    ("missing label column", "label_columns ['round'] not in the dataset"),
])
def test_malformed_labels_are_one_clear_line(case, message, tmp_path):
    rows = digits(n_per_class=2)
    images = [im for im, _ in rows]
    tags = [digit_tags(d) for _, d in rows]
    kwargs = {}
    if case == "unknown class in a list":
        evals = datasets.Dataset.from_dict({"image": images[:4], "labels": [["even"], ["square", "loop"], [], []]})
        data = repo(tmp_path, datasets.Dataset.from_dict({"image": images, "labels": tags}), evals)
    elif case == "mixed list and scalar":
        # A save_to_disk folder keeps each split's own types (a parquet repo fails to load: see below).
        evals = datasets.Dataset.from_dict({"image": images[:3], "labels": ["even", "loop", "even"]})
        data = str(tmp_path / "disk")
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": images, "labels": tags}),
                              "validation": evals}).save_to_disk(data)
    elif case in ("0/1 column with a 2", "missing label column"):
        loop = [int("loop" in t) for t in tags]
        loop[3] = 2
        data = repo(tmp_path, datasets.Dataset.from_dict({"image": images, "even": [int("even" in t) for t in tags],
                                                          "loop": loop}))
        kwargs["label_columns"] = ["even", "loop"] if case == "0/1 column with a 2" else ["even", "round"]
    else:
        data = repo(tmp_path, datasets.Dataset.from_dict({"image": images, "labels": tags}))
        kwargs["problem_type"] = "single_label_classification"
    with pytest.raises(PipelineError) as info:
        load(dataset_name=data, verify_images=False, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_option_checks(tagged_digits_parquet):
    with pytest.raises(PipelineError, match="streaming is single-label only"):
        DataArguments(dataset_name="x", label_columns=["a", "b"], streaming=True)
    from vit_pipeline.data.stream import stream_splits

    with pytest.raises(PipelineError, match="label column 'tags' holds lists of labels .*streaming is single-label"):
        stream_splits(DataArguments(dataset_name=str(tagged_digits_parquet), label_column_name="tags", streaming=True),
                      seed=0)
    with pytest.raises(PipelineError, match="either label_columns .* or label_column_name"):
        DataArguments(dataset_name="x", label_columns=["a"], label_column_name="b")
    with pytest.raises(PipelineError, match="problem_type must be one of"):
        DataArguments(dataset_name="x", problem_type="multilabel")
    with pytest.raises(PipelineError, match="label_columns is multi-label"):
        DataArguments(dataset_name="x", label_columns=["a"], problem_type="single_label_classification")


def test_parquet_repo_with_mixed_list_and_scalar_splits_is_one_line(tmp_path):
    images = [im for im, _ in digits(n_per_class=1)]
    data = repo(tmp_path, datasets.Dataset.from_dict({"image": images, "labels": [["even"]] * len(images)}),
                datasets.Dataset.from_dict({"image": images[:3], "labels": ["even", "loop", "even"]}))
    with pytest.raises(PipelineError) as info:
        load(dataset_name=data)
    message = str(info.value)
    assert "Couldn't cast array of type string to List(Value('string'))" in message
    assert "the splits' columns have different types" in message and "\n" not in message


def test_zero_one_flag_vectors_with_label_flag_names(tmp_path):
    rows = digits(n_per_class=2)
    flags = expected_matrix(rows).astype(int).tolist()
    ds = datasets.Dataset.from_dict({"path": [f"{i}.png" for i in range(len(rows))], "label": flags,
                                     "image": [im for im, _ in rows]},
                                    features=datasets.Features({"path": datasets.Value("string"),
                                                                "label": datasets.List(datasets.Value("uint8")),
                                                                "image": datasets.Image()}))
    splits = load(dataset_name=repo(tmp_path, ds, ds), label_column_name="label", label_flag_names=DIGIT_TAGS)
    assert splits.multi_label and splits.labels == DIGIT_TAGS
    np.testing.assert_array_equal(label_matrix(splits.eval), expected_matrix(rows))
    with pytest.raises(PipelineError, match=r"split 'train' row 0 holds 3 flags where label_flag_names has 2 classes"):
        load(dataset_name=repo(tmp_path / "b", ds, ds), label_column_name="label", label_flag_names=["a", "b"],
             verify_images=False)
