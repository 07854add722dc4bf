"""Numbers you can trust, end to end on real digits with train / validation / test splits: the card's `model-index`
reports the test split, and `evaluate RUN --eval_split test` gives the same figures; `evaluate RUN` with no data
options reproduces the run's own eval report; the calibrated model's `pipeline()` scores are the temperature-scaled
ones with every top-1 unchanged; a split holding training rows is refused or marked; bad test options are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST, digits, run_cli_here, write_imagefolder
from tests.docs_blocks import commands

DOCS = "docs/trust.md"


@pytest.fixture(scope="module")
def three_splits(tmp_path_factory) -> Path:
    """Four digit classes as an imagefolder with train (18 per class), validation (6) and test (6) splits."""
    rows = digits(n_per_class=30, classes=4)
    parts = {"train": [], "validation": [], "test": []}
    for i, row in enumerate(rows):
        parts["validation" if i % 5 == 0 else "test" if i % 5 == 1 else "train"].append(row)
    return write_imagefolder(tmp_path_factory.mktemp("digits-3-splits"), parts)


def evaluate(run: Path, out: Path, *options: str) -> dict:
    """`vit-pipeline evaluate RUN OPTIONS --output_dir OUT` (a later --output_dir wins); returns the report."""
    result = run_cli_here("evaluate", str(run), *options, "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((out / "eval_report.json").read_text())


@pytest.mark.slow
def test_test_split_calibration_and_evaluate_run(tiny_vit, three_splits, tmp_path):
    from huggingface_hub import metadata_load
    from transformers import pipeline

    run = tmp_path / "run"
    # The docs page's commands (train, evaluate RUN, evaluate RUN --eval_split test), on the tiny model, this dataset
    # and temporary folders.
    train, own_eval, test_eval = (
        [str(run) if word == "outputs/quickstart" else word for word in words]
        for words in commands(DOCS, "test_test_split_calibration_and_evaluate_run"))
    assert train[0] == "train" and own_eval[:2] == test_eval[:2] == ["evaluate", str(run)]
    result = run_cli_here(*train, "--model_name_or_path", str(tiny_vit), "--dataset_name", str(three_splits),
                          "--output_dir", str(run), *FAST, "--num_train_epochs", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run / "all_results.json").read_text())
    assert results["test_samples"] == 24 and results["calibration_measured_on"] == "test"

    # model-index: the test split, named; its accuracy is what evaluate RUN --eval_split test measures.
    index = metadata_load(run / "README.md")["model-index"][0]["results"][0]
    assert index["dataset"]["split"] == "test"
    card_accuracy = next(m["value"] for m in index["metrics"] if m["type"] == "accuracy")
    assert card_accuracy == pytest.approx(results["test_accuracy"], abs=1e-6)
    tested = evaluate(run, tmp_path / "test-report", *test_eval[2:])
    assert tested["num_samples"] == 24 and tested["accuracy"] == pytest.approx(card_accuracy, abs=1e-6)
    card = (run / "README.md").read_text()
    assert "never used to choose anything" in card and "which chose the checkpoint" in card

    # evaluate RUN with no data options: the run's own eval report, figure for figure, on the same rows.
    own = json.loads((run / "eval_report.json").read_text())
    again = evaluate(run, tmp_path / "eval-report", *own_eval[2:])
    assert again["num_samples"] == own["num_samples"] == 24
    assert {k: v for k, v in again.items() if k != "model"} == {k: v for k, v in own.items() if k != "model"}

    # Calibration: T is fitted on validation, so there its NLL can only fall; the run records what it did on test
    # (on 24 images of a barely trained model the held-out ECE moves either way: its drop on held-out data is shown on
    # overconfident logits in tests/evaluation/test_calibration.py). pipeline() returns the calibrated scores, and the
    # best checkpoint (the uncalibrated weights) has the same top-1 on every test image.
    calibration = own["calibration"]
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
    assert results["calibration_temperature"] == pytest.approx(calibration["temperature"])
    assert 0 <= results["calibration_ece_after"] <= 1 and 0 <= results["calibration_ece_before"] <= 1
    temperature = calibration["temperature"]
    best = json.loads((run / "trainer_state.json").read_text())["best_model_checkpoint"]
    images = sorted((three_splits / "test").glob("*/*.png"))
    calibrated = pipeline("image-classification", model=str(run), device="cpu")(
        [str(p) for p in images], top_k=4)
    raw = pipeline("image-classification", model=best, device="cpu")([str(p) for p in images], top_k=4)
    for cal, unc in zip(calibrated, raw, strict=True):
        assert cal[0]["label"] == unc[0]["label"]
        names = [s["label"] for s in unc]
        scaled = np.exp(np.log([s["score"] for s in unc]) / temperature)
        expected = dict(zip(names, scaled / scaled.sum(), strict=True))
        assert {s["label"]: s["score"] for s in cal} == pytest.approx(expected, abs=1e-4)

    # A split with training rows: refused in one line, or marked with --allow_train_overlap.
    refused = run_cli_here("evaluate", str(run), "--output_dir", str(tmp_path / "r"), "--eval_split", "train")
    assert refused.returncode == 2 and "72 of these 72 images are among the run's training rows" in (
        refused.stderr.strip().splitlines()[-1])
    marked = evaluate(run, tmp_path / "marked", "--eval_split", "train", "--allow_train_overlap")
    assert marked["train_overlap"] == 72
    assert "among the training rows" in (tmp_path / "marked" / "eval_report.md").read_text()


def test_bad_test_options_are_one_line(tiny_vit, tmp_path):
    data = write_imagefolder(tmp_path / "data", {"train": digits(n_per_class=6, classes=3),
                                                 "validation": digits(n_per_class=2, classes=3, seed=1)})
    cases = [(("--test_split", "holdout"), "no 'holdout' split (splits: train, validation); fix test_split"),
             (("--test_fraction", "0.99"), "test_fraction 0.99 of 18 training rows leaves no training rows"),
             (("--test_fraction", "1"), "test_fraction must be in [0, 1)")]
    for options, message in cases:
        result = run_cli_here("train", "--model_name_or_path", str(tiny_vit), "--dataset_name", str(data),
                              "--output_dir", str(tmp_path / "out"), *FAST, *options)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 2 and last.startswith("vit-pipeline: error:") and message in last, result.stderr
        assert not (tmp_path / "out" / "recipe.yaml").exists()
