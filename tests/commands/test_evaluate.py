"""`vit-pipeline evaluate` end to end on a saved classifier and real digit images; bad inputs give one line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.conftest import digits, write_imagefolder
from vit_pipeline.cli import main

FILES = ("eval_report.json", "eval_report.md", "predictions.csv", "confusion_matrix.png", "reliability_diagram.png")


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
        raise SystemExit(0)
    return exit_info.value.code


@pytest.mark.slow
def test_evaluate_writes_report(digits_classifier, digits_folder, tmp_path):
    from transformers import pipeline

    out = tmp_path / "report"
    assert run("evaluate", str(digits_classifier), "--dataset_name", str(digits_folder), "--max_eval_samples", "30",
               "--output_dir", str(out)) == 0
    for name in FILES:
        assert (out / name).is_file(), name
    report = json.loads((out / "eval_report.json").read_text())
    assert report["num_samples"] == 30 == np.asarray(report["confusion_matrix"]).sum()
    assert report["labels"] == [str(d) for d in range(10)] and "top5_accuracy" in report
    assert report["split"] == "validation" and report["model"] == str(digits_classifier)
    with (out / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 30 and set(rows[0]) == {"path", "true_label", "predicted_label", "score"}
    # The predictions are pipeline()'s on the same files.
    classifier = pipeline("image-classification", model=str(digits_classifier), device="cpu")
    for row in rows[:5]:
        top = classifier(row["path"], top_k=1)[0]
        assert top["label"] == row["predicted_label"] and top["score"] == pytest.approx(float(row["score"]), abs=1e-4)
        assert row["true_label"] == row["path"].split("/")[-2]
    accuracy = np.mean([r["true_label"] == r["predicted_label"] for r in rows])
    assert report["accuracy"] == pytest.approx(accuracy)


@pytest.mark.slow
def test_evaluate_validation_dir_alone(digits_classifier, tmp_path):
    folder = write_imagefolder(tmp_path / "val", {"x": digits(n_per_class=2)}) / "x"
    out = tmp_path / "report"
    assert run("evaluate", str(digits_classifier), "--validation_dir", str(folder), "--output_dir", str(out)) == 0
    assert json.loads((out / "eval_report.json").read_text())["num_samples"] == 20


def test_bad_inputs_one_line(digits_classifier, digits_folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "cat" / "notes.txt").write_text("no images here")
    unknown = write_imagefolder(tmp_path / "unknown", {"train": [(im, "cat" if d % 2 else str(d)) for im, d in
                                                                     digits(n_per_class=1)]})
    cases = [
        ((str(tmp_path / "no-such-folder"), "--dataset_name", str(digits_folder)), "no model"),
        (("nobody/no-such-model", "--dataset_name", str(digits_folder)), "cannot load the model of"),
        ((str(digits_classifier), "--train_dir", str(empty)), "no images in"),
        ((str(digits_classifier), "--dataset_name", str(unknown)), "label 'cat' of the dataset"),
        ((str(digits_classifier), "--dataset_name", str(digits_folder), "--bogus", "1"), "unknown option --bogus"),
    ]
    for args, message in cases:
        assert run("evaluate", *args, "--output_dir", str(tmp_path / "r")) == 2
        # Progress bars may come before it; the error itself is one line, last, and no traceback.
        err = capsys.readouterr().err.strip()
        last = err.splitlines()[-1]
        assert last.startswith("vit-pipeline: error:") and message in last and "Traceback" not in err, err


def test_evaluate_a_hub_model(digits_classifier, digits_folder, tmp_path, hub_server, monkeypatch):
    from huggingface_hub import HfApi

    # The model is on the Hub (the stand-in), private: read with the token of `hf auth login` / HF_TOKEN.
    api = HfApi()
    api.create_repo("org/digits-vit", token="hf_good", private=True)
    api.upload_folder(folder_path=str(digits_classifier), repo_id="org/digits-vit", token="hf_good")
    out = tmp_path / "report"
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    assert run("evaluate", "org/digits-vit", "--dataset_name", str(digits_folder), "--max_eval_samples", "10",
               "--output_dir", str(out)) == 0
    report = json.loads((out / "eval_report.json").read_text())
    assert report["model"] == "org/digits-vit" and report["num_samples"] == 10
