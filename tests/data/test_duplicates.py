"""Exact duplicates from the image check's pixel digests (JPEG draft digests confirmed at full scale), and
`exclude_images` by `split:row`."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import digits, to_dataset, write_parquet_repo
from vit_pipeline import PipelineError
from vit_pipeline.data.check import check_images
from vit_pipeline.data.duplicates import confirm_in, find_exact_duplicates


def jpeg(array: np.ndarray) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_check_digests_count_exact_copies_within_and_across_splits():
    rows = digits(n_per_class=2)
    # 8 x 8 blocks with the same mean (a checkerboard and its inverse): equal at the check's 1/8-scale JPEG decode,
    # different at full scale.
    board = np.kron(np.indices((4, 4)).sum(axis=0) % 2, np.ones((2, 2))).astype(np.uint8) * 255
    tiles = [np.tile(board, (2, 2)), np.tile(255 - board, (2, 2))]
    train = to_dataset(rows + [rows[0], rows[1], (jpeg(tiles[0]), 0)])
    evals = to_dataset([rows[2], rows[3], (rows[4][0].convert("RGB"), 4), (jpeg(tiles[1]), 0), rows[5]])
    digests: dict[str, list[str]] = {}
    check_images({"train": train, "eval": evals}, "error", digests=digests)
    found = find_exact_duplicates(digests, confirm_in({"train": train, "eval": evals}))
    # Train: rows 0 and 1 twice; eval: 2, 3 and 5 are train images (4 in RGB is other pixels, the JPEGs differ).
    assert found.within == {"train": 2, "eval": 0} and found.leaked == {"eval": 3}
    assert found.sentences() == ["3 eval images are exact copies of train images",
                                 "2 train images are exact copies of other train images"]
    # Without the full-scale confirmation the two JPEG tiles would count as one image.
    assert find_exact_duplicates(digests).leaked == {"eval": 4}


def test_exclude_images_by_split_row(tmp_path):
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.data.load import load_splits

    root = write_parquet_repo(tmp_path / "data", {"train": to_dataset(digits(n_per_class=3)),
                                                  "validation": to_dataset(digits(n_per_class=1, seed=1))})
    listed = tmp_path / "exclude.txt"
    listed.write_text("# from an audit\ntrain:3\ntrain:17\nvalidation:0\n")
    splits = load_splits(DataArguments(dataset_name=str(root), exclude_images=str(listed)), seed=0, with_source=True)
    # 30 - 2 train rows, 3 of them then held out as the test part (test_fraction 0.1); 10 - 1 eval rows.
    assert (len(splits.train), len(splits.test), len(splits.eval)) == (25, 3, 9)
    assert splits.excluded_images == {"train": 2, "validation": 1}
    kept = set(splits.train["_source_row"]) | set(splits.eval["_source_row"]) | set(splits.test["_source_row"])
    assert not kept & {"train:3", "train:17", "validation:0"} and len(kept) == 37
    listed.write_text("train:3\ntrain:30\n")
    with pytest.raises(PipelineError, match=r"names 1 image\(s\) that are not in the data \(first: train:30\)"):
        load_splits(DataArguments(dataset_name=str(root), exclude_images=str(listed)), seed=0)


def test_class_balance_single_and_multi_label():
    from vit_pipeline.data.balance import class_balance

    balance = class_balance(["a", "b", "c"], {"train": [0, 0, 0, 1], "eval": [[1, 0, 1], [1, 0, 0]]})
    assert balance["counts"] == {"train": {"a": 3, "b": 1, "c": 0}, "eval": {"a": 2, "b": 0, "c": 1}}
    assert balance["imbalance_ratio"] == {"train": 3.0, "eval": 2.0}
    assert balance["missing"] == {"train": ["c"], "eval": ["b"]}
