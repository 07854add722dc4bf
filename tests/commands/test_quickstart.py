"""The README's first command: the quickstart recipe, run as is, reaches 0.98 accuracy on 360 held-out digits."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_quickstart_recipe_as_is(tmp_path):
    out = tmp_path / "quickstart"
    # Only the output folder changes (the recipe's own is relative to the repository root), and torch takes every
    # core as it does for a user (the suite's other commands run one thread each; nothing else runs meanwhile).
    cores = str(len(os.sched_getaffinity(0)))
    result = run_cli("train", "recipes/quickstart.yaml", "--output_dir", str(out), "--disable_tqdm", "true",
                     env={"OMP_NUM_THREADS": cores, "MKL_NUM_THREADS": cores})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] >= 0.98, metrics
    card = (out / "README.md").read_text()
    assert "from random initialisation" in card and "360 images" in card
    # A test split too, never used to choose: 10% of the other training digits, scored once on the calibrated model.
    results = json.loads((out / "all_results.json").read_text())
    assert results["test_samples"] == 144 and results["test_accuracy"] >= 0.95, results
    assert results["calibration_ece_after"] < results["calibration_ece_before"], results

    from transformers import pipeline

    from tests.conftest import digits

    classifier = pipeline("image-classification", model=str(out))
    rows = digits(n_per_class=3)
    predictions = classifier([image for image, _ in rows], top_k=1)
    assert {p[0]["label"] for p in predictions} <= {str(d) for d in range(10)}
    # Digits the model has seen or not, it reads most of them right.
    right = sum(p[0]["label"] == str(digit) for p, (_, digit) in zip(predictions, rows, strict=True))
    assert right >= 0.9 * len(rows)
