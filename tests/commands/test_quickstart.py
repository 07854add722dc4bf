"""The README's first command, read from the page and run as is in a user's folder: the quickstart recipe reaches 0.98
accuracy on 360 held-out digits; then the commands the README and the command pages show on its output folder."""

from __future__ import annotations

import csv
import json
import os

import pytest

from tests.conftest import REPO, digits, run_cli, run_cli_here
from tests.docs_blocks import block, commands

README = "README.md"
# Pages that show the quickstart command itself, and the ones whose examples run on its output folder.
QUICKSTART_PAGES = ("docs/getting-started.md", "docs/commands/train.md")
MODEL_PAGES = ("README.md", "docs/commands/evaluate.md", "docs/commands/predict.md", "docs/commands/export.md")
# The Python snippet that loads the model: the README's and getting started's.
SNIPPET_PAGES = ("README.md", "docs/getting-started.md")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's folder with the repository's recipes in it (the quickstart's model path is relative to it), and a few
    digit images to predict: the pages' relative paths (outputs/quickstart, digits/, digit.png) resolve there."""
    work = tmp_path_factory.mktemp("user")
    (work / "recipes").symlink_to(REPO / "recipes")
    (work / "digits").mkdir()
    for i, (image, digit) in enumerate(digits(n_per_class=1)):
        image.save(work / "digits" / f"{digit}-{i}.png")
    image, _ = digits(n_per_class=1, seed=1)[7]
    image.save(work / "digit.png")
    return work


@pytest.fixture(scope="module")
def quickstart(workdir):
    """The README's quickstart command, as is, with torch on every core as for a user (the suite's other commands run
    one thread each; nothing else runs meanwhile). Returns its output folder."""
    [argv] = commands(README, "test_quickstart_recipe_as_is")
    cores = str(len(os.sched_getaffinity(0)))
    result = run_cli(*argv, "--disable_tqdm", "true", cwd=workdir, env={"OMP_NUM_THREADS": cores,
                                                                        "MKL_NUM_THREADS": cores})
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir / "outputs" / "quickstart"


@pytest.mark.slow
def test_quickstart_recipe_as_is(quickstart, workdir, monkeypatch, capsys):
    # Getting started and the train page show the very command the README shows.
    for page in QUICKSTART_PAGES:
        assert commands(page, "test_quickstart_recipe_as_is") == commands(README, "test_quickstart_recipe_as_is")
    metrics = json.loads((quickstart / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] >= 0.98, metrics
    card = (quickstart / "README.md").read_text()
    assert "from random initialisation" in card and "360 images" in card
    # A test split too, never used to choose: 10% of the other training digits, scored once on the calibrated model.
    results = json.loads((quickstart / "all_results.json").read_text())
    assert results["test_samples"] == 144 and results["test_accuracy"] >= 0.95, results
    assert results["calibration_ece_after"] < results["calibration_ece_before"], results

    from transformers import pipeline

    classifier = pipeline("image-classification", model=str(quickstart))
    rows = digits(n_per_class=3)
    predictions = classifier([image for image, _ in rows], top_k=1)
    assert {p[0]["label"] for p in predictions} <= {str(d) for d in range(10)}
    # Digits the model has seen or not, it reads most of them right.
    right = sum(p[0]["label"] == str(digit) for p, (_, digit) in zip(predictions, rows, strict=True))
    assert right >= 0.9 * len(rows)

    # The pages' snippet, as is, in the user's folder: it prints the predictions for digit.png.
    monkeypatch.chdir(workdir)
    for page in SNIPPET_PAGES:
        exec(block(page, "test_quickstart_recipe_as_is", "python").body, {})
        printed = capsys.readouterr().out
        assert printed.startswith("[{'label': '7', 'score': "), printed


@pytest.mark.slow
def test_the_commands_on_the_quickstart_model(quickstart, workdir, monkeypatch):
    """evaluate, predict, export and explain as the README and the command pages show them, in-process."""
    shown = [argv for page in MODEL_PAGES for argv in commands(page, "test_the_commands_on_the_quickstart_model")]
    ran = []
    monkeypatch.chdir(workdir)
    for argv in shown:
        if argv not in ran:
            result = run_cli_here(*argv)
            assert result.returncode == 0, f"vit-pipeline {' '.join(argv)}:\n{result.stderr[-3000:]}"
            ran.append(argv)
    assert [argv[0] for argv in ran] == ["evaluate", "predict", "export", "explain"]

    # evaluate scores the 360 digits training held out, as training scored them.
    report = json.loads((workdir / "reports" / "quickstart" / "eval_report.json").read_text())
    trained = json.loads((quickstart / "eval_results.json").read_text())
    assert report["num_samples"] == 360
    assert report["accuracy"] == pytest.approx(trained["eval_accuracy"], abs=1e-6)
    # predict: one row per image of digits/, the top 3 listed, mostly right.
    with open(workdir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and all(len(json.loads(row["labels"])) == 3 for row in rows)
    assert sum(row["label"] == os.path.basename(row["path"]).split("-")[0] for row in rows) >= 8
    # export: both ONNX files, and the parity check passed on the run's own eval images.
    export = json.loads((workdir / "onnx" / "quickstart" / "export_report.json").read_text())
    assert (workdir / "onnx" / "quickstart" / "model.onnx").is_file()
    assert (workdir / "onnx" / "quickstart" / "model_quantized.onnx").is_file()
    assert export["parity"]["within_atol"] and export["parity"]["num_images"] == 64, export
    assert export["quantized"]["top1_agreement"] >= 0.9, export
    # explain: one map per image.
    assert len(list((workdir / "maps").glob("*.png"))) == 10


@pytest.mark.slow
def test_train_from_python(workdir, monkeypatch, capsys):
    """The train page's Python call, as is, in the user's folder: one epoch of the quickstart, its metrics returned."""
    monkeypatch.chdir(workdir)
    exec(block("docs/commands/train.md", "test_train_from_python", "python").body, {})
    accuracy = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 < accuracy <= 1.0
    saved = json.loads((workdir / "outputs" / "one-epoch" / "eval_results.json").read_text())
    assert saved["eval_accuracy"] == accuracy
