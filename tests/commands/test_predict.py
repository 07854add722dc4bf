"""`vit-pipeline predict` on real images: rows equal `pipeline()` outputs; every output format; bad inputs."""

from __future__ import annotations

import csv
import json
import re

import pytest

from tests.conftest import digits, photos
from vit_pipeline.cli import main


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
        raise SystemExit(0)
    return exit_info.value.code


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    for i, (image, _) in enumerate(digits(n_per_class=1)[:4]):
        image.save(folder / f"digit{i}.png")
    for i, (image, _) in enumerate(photos(n_per_class=1)):
        image.save(folder / "nested" / f"photo{i}.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.mark.slow
def test_rows_equal_pipeline(digits_classifier, images, tmp_path, capsys):
    from transformers import pipeline

    out = tmp_path / "preds.csv"
    assert run("predict", str(digits_classifier), str(images), "--output", str(out), "--top_k", "3",
               "--batch_size", "3") == 0
    printed = capsys.readouterr().out
    assert "1 unreadable skipped" in printed
    # Its own speed, and how it decoded: on a CPU-only machine, on one thread per core of this process.
    speed = r"7 image\(s\) predicted into \S+ \([\d,.]+ images/s, decoded on [1-9]\d* threads?\)"
    assert re.search(speed, printed), printed
    with out.open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 7 and not any(r["path"].endswith(("broken.png", "notes.txt")) for r in rows)
    classifier = pipeline("image-classification", model=str(digits_classifier), device="cpu")
    for row in rows:
        expected = classifier(row["path"], top_k=3)
        assert json.loads(row["labels"]) == [e["label"] for e in expected]
        assert json.loads(row["scores"]) == pytest.approx([e["score"] for e in expected], abs=1e-4)
        assert row["label"] == expected[0]["label"] and float(row["score"]) == pytest.approx(expected[0]["score"],
                                                                                             abs=1e-4)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_formats_and_globs(digits_classifier, images, tmp_path, suffix):
    out = tmp_path / f"preds{suffix}"
    assert run("predict", str(digits_classifier), str(images / "**" / "*.jpg"), str(images / "digit0.png"),
               "--output", str(out), "--top_k", "2", "--threshold", "0.0") == 0
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4 and {"path", "label", "score", "labels", "scores"} == set(rows[0])
    assert all(len(r["labels"]) == 2 and r["scores"][0] >= r["scores"][1] for r in rows)


def test_threshold_drops_low_scores(digits_classifier, images, tmp_path):
    out = tmp_path / "preds.jsonl"
    assert run("predict", str(digits_classifier), str(images / "digit0.png"), "--output", str(out),
               "--threshold", "0.99") == 0
    row = json.loads(out.read_text())
    assert row["labels"] == [] and row["label"] is None  # a random 10-class model is never that sure


def test_bad_inputs_one_line(digits_classifier, images, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ((str(tmp_path / "no-model"), str(images)), "no model"),
        ((str(digits_classifier), str(empty)), "no images in"),
        ((str(digits_classifier), str(tmp_path / "missing.png")), "is not a file, a folder or a glob"),
        ((str(digits_classifier), str(images), "--bad_images", "error"), "unreadable image"),
    ]
    for args, message in cases:
        assert run("predict", *args, "--output", str(tmp_path / "p.csv")) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("vit-pipeline: error:") and message in last, last
    assert run("predict", str(digits_classifier), str(images), "--output", str(tmp_path / "p.txt")) == 2
    assert "must end in .csv, .jsonl, .parquet" in capsys.readouterr().err
