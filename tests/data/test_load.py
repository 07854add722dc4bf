"""load_splits: every layout, column and label detection, held-out splits, and every bad input."""

from __future__ import annotations

from collections import Counter

import datasets
import pytest

from tests.conftest import digits, photos, to_dataset, write_imagefolder, write_parquet_repo
from vit_pipeline import PipelineError
from vit_pipeline.config import DataArguments
from vit_pipeline.data.load import load_splits


def load(**kwargs):
    return load_splits(DataArguments(**kwargs), seed=0)


def test_builtin_digits_is_the_full_sklearn_set():
    splits = load(dataset_name="builtin:digits", train_val_split=0.2)
    assert len(splits.train) + len(splits.eval) + len(splits.test) == 1797
    # The eval split is held out first (the same 360 rows as before test splits existed), then 10% of the rest.
    assert len(splits.eval) == 360 and len(splits.test) == 144
    assert splits.labels == [str(d) for d in range(10)]
    assert splits.hub_id is None and "20% held out" in splits.eval_split_name


def test_held_out_split_is_stratified_and_seeded(digits_folder):
    a = load(train_dir=str(digits_folder / "train"), train_val_split=0.2)
    b = load(train_dir=str(digits_folder / "train"), train_val_split=0.2)
    assert a.eval["label"][:] == b.eval["label"][:]
    counts = Counter(a.eval["label"][:])
    # 30 training images per class, 20% held out: 6 of each class.
    assert set(counts.values()) == {6} and len(counts) == 10


def test_imagefolder_uses_its_validation_split(digits_folder):
    splits = load(dataset_name=str(digits_folder))
    assert splits.eval_split_name == "validation"
    # No test split in the folder: 10% of the training rows are held out as one.
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (270, 100, 30)
    assert isinstance(splits.train.features["label"], datasets.ClassLabel)
    assert splits.train.column_names == ["image", "label"]


def test_parquet_repo_columns_and_string_labels(photos_parquet):
    splits = load(dataset_name=str(photos_parquet))
    assert splits.eval_split_name == "test"
    assert splits.labels == ["astronaut", "chelsea", "coffee"]  # strings become a sorted ClassLabel
    assert splits.train.features["label"].names == splits.labels
    assert splits.eval.features["label"].names == splits.labels
    row = splits.eval[0]
    assert row["image"].size == (48, 48)
    assert splits.labels[row["label"]] in ("astronaut", "chelsea", "coffee")


def test_eval_split_option_and_max_samples(photos_parquet):
    splits = load(dataset_name=str(photos_parquet), eval_split="train", max_train_samples=5, max_eval_samples=7)
    assert (len(splits.train), len(splits.eval)) == (5, 7)
    with pytest.raises(PipelineError, match="no 'dev' split .*splits: train, test.*fix eval_split"):
        load(dataset_name=str(photos_parquet), eval_split="dev")


def test_explicit_columns(tmp_path):
    rows = photos(n_per_class=3)
    ds = to_dataset(rows, image_column="picture", label_column="species")
    write_parquet_repo(tmp_path, {"train": ds}, readme=False)
    # The image column is found by its feature type; a plain string column is not taken for labels unasked.
    with pytest.raises(PipelineError, match="no label column found .*picture, species.*set label_column_name"):
        load(dataset_name=str(tmp_path))
    with pytest.raises(PipelineError, match="label column 'kind' not in the dataset"):
        load(dataset_name=str(tmp_path), image_column_name="picture", label_column_name="kind")
    splits = load(dataset_name=str(tmp_path), image_column_name="picture", label_column_name="species",
                  train_val_split=0.34)
    assert splits.labels == ["astronaut", "chelsea", "coffee"]


def test_integer_labels_sort_as_numbers(tmp_path):
    rows = [(im, {0: 2, 1: 10, 2: 7}[d]) for im, d in digits(n_per_class=4, classes=3)]
    datasets.DatasetDict({"train": to_dataset(rows)}).save_to_disk(str(tmp_path / "saved"))
    splits = load(dataset_name=str(tmp_path / "saved"), train_val_split=0.25)
    assert splits.labels == ["2", "7", "10"]


def test_eval_labels_missing_from_train_are_named(tmp_path):
    rows = digits(n_per_class=3, classes=4)
    train = [(im, str(d)) for im, d in rows if d < 3]
    val = [(im, str(d)) for im, d in rows]
    write_parquet_repo(tmp_path, {"train": to_dataset(train), "validation": to_dataset(val)}, readme=False)
    with pytest.raises(PipelineError, match=r"split 'validation' has labels that train never has: \['3'\]"):
        load(dataset_name=str(tmp_path))


def test_imagefolder_class_only_in_validation_is_named(tmp_path):
    rows = photos(n_per_class=3)
    write_imagefolder(tmp_path, {"train": [r for r in rows if r[1] != "coffee"], "validation": rows})
    with pytest.raises(PipelineError, match=r"labels that train never has: \['coffee'\]"):
        load(train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "validation"))


def test_unlabelled_rows_are_an_error(tmp_path):
    rows = digits(n_per_class=3, classes=2)
    ds = datasets.Dataset.from_dict({"image": [im for im, _ in rows], "label": [-1] + [d for _, d in rows[1:]]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=["0", "1"])}))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(PipelineError, match="split 'train' has rows without a label"):
        load(dataset_name=str(tmp_path / "saved"))


def test_corrupt_image_is_named_or_skipped(tmp_path):
    rows = photos(n_per_class=4)
    write_imagefolder(tmp_path, {"train": rows})
    bad = sorted((tmp_path / "train" / "coffee").glob("*.png"))[1]
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated PNG: the header reads, the pixels do not
    sorted((tmp_path / "train" / "chelsea").glob("*.png"))[0].write_bytes(b"not an image at all")
    with pytest.raises(PipelineError, match=r"unreadable image in split .* row \d+ \(.*\.png\).*2 bad in all.*"
                                            "bad_images: skip"):
        load(train_dir=str(tmp_path / "train"), train_val_split=0.25)
    splits = load(train_dir=str(tmp_path / "train"), train_val_split=0.25, bad_images="skip")
    assert sum(splits.skipped_images.values()) == 2
    assert len(splits.train) + len(splits.eval) + len(splits.test) == 10


def test_missing_dataset_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="cannot load dataset 'org/no-such-dataset'.*HF_TOKEN") as err:
        load(dataset_name="org/no-such-dataset")
    assert "\n" not in str(err.value)
    with pytest.raises(PipelineError, match="image folder .* does not exist"):
        load(train_dir=str(tmp_path / "nowhere"))
    with pytest.raises(PipelineError, match="no 'train' split"):
        ds = to_dataset(photos(n_per_class=2))
        datasets.DatasetDict({"fit": ds}).save_to_disk(str(tmp_path / "saved"))
        load(dataset_name=str(tmp_path / "saved"))


def test_imagefolder_with_a_single_class_says_so(tmp_path):
    write_imagefolder(tmp_path / "one", {"train": digits(n_per_class=6, classes=1)})
    with pytest.raises(PipelineError, match="single class folder") as err:
        load(train_dir=str(tmp_path / "one" / "train"))
    assert "no label column" not in str(err.value)


def test_labelled_data_with_a_single_class_says_so(tmp_path):
    ds = to_dataset([(im, "cat") for im, _ in digits(n_per_class=6, classes=1)])
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(PipelineError, match=r"single class \(cat\): a classifier needs at least two"):
        load(dataset_name=str(tmp_path / "saved"))


def test_corrupt_image_found_by_the_pixel_cache_pass(tmp_path):
    """With pixel_cache, building the cache is the image check: one decode pass, the same errors and counts."""
    from transformers import ViTImageProcessor

    from vit_pipeline.data.prepare import prepare_datasets

    rows = photos(n_per_class=4)
    write_imagefolder(tmp_path, {"train": rows})
    sorted((tmp_path / "train" / "chelsea").glob("*.png"))[0].write_bytes(b"not an image at all")
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    for policy in ("error", "skip"):
        data_args = DataArguments(train_dir=str(tmp_path / "train"), train_val_split=0.25, pixel_cache=True,
                                  bad_images=policy, test_split="none")
        splits = load_splits(data_args, seed=0)  # no separate check: the bad file is still there
        assert len(splits.train) + len(splits.eval) == 12
        if policy == "error":
            with pytest.raises(PipelineError, match=r"unreadable image in split '(train|eval)', row \d+: .*"
                                                    "bad_images: skip"):
                prepare_datasets(splits.train, splits.eval, processor, data_args)
        else:
            train, evals = prepare_datasets(splits.train, splits.eval, processor, data_args,
                                            skipped=splits.skipped_images)
            assert sum(splits.skipped_images.values()) == 1 and len(train) + len(evals) == 11


def test_split_folders_are_one_pattern_each(tmp_path, digits_folder):
    from pathlib import Path

    from vit_pipeline.data.sources import image_split_folders

    assert image_split_folders(Path(digits_folder)) == {"train": f"{digits_folder}/train/**",
                                                        "validation": f"{digits_folder}/validation/**"}
    # Anything datasets reads besides images keeps its own inference.
    write_imagefolder(tmp_path / "valid", {"valid": digits(n_per_class=2)})
    assert image_split_folders(tmp_path / "valid") == {"validation": f"{tmp_path}/valid/valid/**"}
    (tmp_path / "valid" / "README.md").write_text("---\nconfigs: []\n---\n")
    assert image_split_folders(tmp_path / "valid") is None
    write_imagefolder(tmp_path / "meta", {"train": digits(n_per_class=2)})
    (tmp_path / "meta" / "train" / "metadata.jsonl").write_text("{}\n")
    assert image_split_folders(tmp_path / "meta") is None
    splits = load(dataset_name=str(digits_folder))
    assert splits.eval_split_name == "validation" and len(splits.labels) == 10
