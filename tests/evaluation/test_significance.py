"""Uncertainty across run folders: the docs page's compare command answers with intervals and McNemar p-values; pairs
scored on other images are not tested; search's best trial is marked clearly better or not."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import REPO
from tests.docs_blocks import commands
from vit_pipeline.evaluation.significance import best_trial_mark, compare_on_same_images

PAGE = "docs/uncertainty.md"


def write_run(folder, accuracy_ci95, rows):
    """What a finished run leaves for these functions: its eval report and its predictions."""
    folder.mkdir(parents=True)
    (folder / "eval_report.json").write_text(json.dumps({"accuracy_ci95": accuracy_ci95}))
    with (folder / "predictions.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "true_label", "predicted_label", "score"])
        writer.writerows([[path, true, predicted, 0.9] for path, true, predicted in rows])


def test_pairs_on_other_images_are_not_tested_and_the_best_trial_is_marked(tmp_path):
    write_run(tmp_path / "a", [0.5, 0.9], [("1.png", "cat", "cat"), ("2.png", "dog", "cat")])
    write_run(tmp_path / "b", [0.4, 0.8], [("1.png", "cat", "cat"), ("3.png", "dog", "dog")])
    rows = [{"model": "a", "folder": "a"}, {"model": "b", "folder": "b"}]
    (pair,) = compare_on_same_images(rows, tmp_path)
    assert pair["verdict"].startswith("Not tested: the two runs were scored on different eval images")
    assert "p_value" not in pair and rows[0]["accuracy_ci95_low"] == 0.5 and rows[1]["accuracy_ci95_high"] == 0.8

    # Trial 0 (0.85) against the next best, trial 1 (0.7, interval 0.4-0.8): outside it, clearly better.
    trials = [(0, 0.85, str(tmp_path / "a")), (1, 0.7, str(tmp_path / "b")), (2, 0.2, "")]
    assert best_trial_mark(trials, "accuracy", maximize=True) == (0, "clearly better than trial 1 (0.7000, 95% "
                                                                     "interval 0.4000-0.8000)")
    trials[0] = (0, 0.75, trials[0][2])
    number, note = best_trial_mark(trials, "accuracy", maximize=True)
    assert number == 0 and note.startswith("within the 95% interval of trial 1") and "not clearly better" in note
    assert best_trial_mark(trials, "loss", maximize=False)[1].startswith("no interval for eval loss")
    assert best_trial_mark(trials[:1], "accuracy", True) == (0, "the only finished trial")


@pytest.mark.slow
def test_the_pages_compare_answers_with_intervals_and_p_values(tmp_path, monkeypatch):
    from statsmodels.stats.contingency_tables import mcnemar

    from vit_pipeline.commands.compare import main as compare

    ((name, *argv),) = commands(PAGE, "test_the_pages_compare_answers_with_intervals_and_p_values")
    assert name == "compare"
    monkeypatch.chdir(REPO)  # the page's paths are relative to the repository root
    out = tmp_path / "cmp"
    rows = compare([*argv, "--output_dir", str(out), "--num_train_epochs", "1", "--max_train_samples", "120",
                    "--max_eval_samples", "80", "--dataloader_num_workers", "0", "--disable_tqdm", "true"])
    for row in rows:
        assert row["accuracy_ci95_low"] <= row["accuracy"] <= row["accuracy_ci95_high"]
    with (out / "comparison_pairs.csv").open() as file:
        (pair,) = list(csv.DictReader(file))
    a_only, b_only = int(pair["a_only_right"]), int(pair["b_only_right"])
    assert int(pair["images"]) == 80
    assert float(pair["p_value"]) == pytest.approx(mcnemar([[0, a_only], [b_only, 0]], exact=True).pvalue
                                                   if a_only + b_only else 1.0)
    assert float(pair["difference"]) == pytest.approx(rows[0]["accuracy"] - rows[1]["accuracy"], abs=1e-6)
    markdown = (out / "comparison.md").read_text()
    assert f"McNemar's exact p = {float(pair['p_value']):.3g}" in markdown
