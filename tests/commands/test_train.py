"""End to end: the real `train` command on tiny checkpoints and real images, in every data layout, reloaded with
`transformers.pipeline("image-classification")`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST, digits, photos, run_cli, run_cli_here, to_dataset, write_imagefolder
from vit_pipeline.cli import main

OUTPUT_FILES = ("model.safetensors", "config.json", "preprocessor_config.json", "recipe.yaml", "train_results.json",
                "eval_results.json", "all_results.json", "README.md",
                # The evaluation report of the saved model on the eval split, and the figures the card shows.
                "eval_report.json", "eval_report.md", "predictions.csv", "confusion_matrix.png", "training_curves.png")


def train(*args: str) -> None:
    """Run `vit-pipeline train ARGS` in-process (same entry point as the console script)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args])
        raise SystemExit(0)
    assert exit_info.value.code == 0


def check_output(out: Path, labels: list[str]) -> list[dict]:
    """Assert the output folder is complete and loads with pipeline(); return its predictions on a few images."""
    from huggingface_hub import metadata_load
    from transformers import pipeline

    for name in OUTPUT_FILES:
        assert (out / name).is_file(), f"{name} missing from {out}"
    assert not list(out.glob("checkpoint-*/optimizer.pt")) or (out / "model.safetensors").exists()
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
    meta = metadata_load(out / "README.md")
    results = meta["model-index"][0]["results"][0]
    assert results["task"]["type"] == "image-classification"
    # model-index reports the test split when the run has one (it never chose anything), else the eval split.
    reported = (json.loads((out / "test_results.json").read_text())["test_accuracy"]
                if (out / "test_results.json").exists()
                else json.loads((out / "eval_results.json").read_text())["eval_accuracy"])
    card_accuracy = next(m["value"] for m in results["metrics"] if m["type"] == "accuracy")
    assert card_accuracy == pytest.approx(reported, abs=1e-6)
    classifier = pipeline("image-classification", model=str(out))
    images = [im.convert("RGB") for im, _ in photos(n_per_class=1)]
    predictions = classifier(images, top_k=len(labels))
    for prediction in predictions:
        assert {p["label"] for p in prediction} == set(labels)
        assert sum(p["score"] for p in prediction) == pytest.approx(1.0, abs=1e-4)
    return predictions


@pytest.mark.slow
def test_imagefolder_with_validation_split(tiny_vit, digits_folder, tmp_path):
    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny_vit), "--dataset_name", str(digits_folder), "--output_dir", str(out),
          *FAST, "--horizontal_flip", "false")
    check_output(out, [str(d) for d in range(10)])
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["dataset_name"] == str(digits_folder)
    assert recipe["num_train_epochs"] == 2
    # pixel_cache unset: two epochs over a few hundred small images, so the run decoded each once (the cache).
    assert recipe["pixel_cache"] is True
    card = (out / "README.md").read_text()
    assert "validation" in card and "pipeline(\"image-classification\"" in card
    # Eval ran every epoch and the card's results table has a row per epoch.
    state = json.loads((out / "trainer_state.json").read_text())
    assert len([e for e in state["log_history"] if "eval_accuracy" in e]) >= 2
    # The saved model is the best epoch's: evaluating it again gives the best score seen during training.
    final = json.loads((out / "eval_results.json").read_text())
    assert final["eval_accuracy"] == pytest.approx(state["best_metric"])


@pytest.mark.slow
def test_parquet_repo_img_column_string_labels_test_split(tiny_backbone, photos_parquet, tmp_path):
    # A Hub-like parquet repo (README with dataset_info), `img` column, string labels, no validation but a test split;
    # the checkpoint is a bare backbone, so the head is fresh.
    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny_backbone), "--dataset_name", str(photos_parquet), "--output_dir", str(out),
          *FAST, "--learning_rate", "1e-3")
    predictions = check_output(out, ["astronaut", "chelsea", "coffee"])
    assert predictions
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_accuracy"] >= 0.0 and "train_loss" in results
    assert "test" in (out / "README.md").read_text()


@pytest.mark.slow
def test_save_to_disk_and_integer_labels(tiny_vit, tmp_path):
    import datasets

    rows = [(im, digit + 3) for im, digit in digits(n_per_class=12, classes=4)]  # labels 3..6, plain integers
    ds = to_dataset(rows)
    assert ds.features["label"].dtype == "int64"
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": ds}).save_to_disk(str(folder))
    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny_vit), "--dataset_name", str(folder), "--output_dir", str(out), *FAST,
          "--train_val_split", "0.25")
    check_output(out, ["3", "4", "5", "6"])
    # 48 rows, 25% held out, stratified: 12 eval rows, 3 per class; then 10% of the other 36 as the test split.
    assert "32 training images, 12 evaluation images" in (out / "README.md").read_text()


@pytest.mark.slow
def test_train_dir_and_validation_dir(tiny_vit, tmp_path, caplog):
    from tests.data.test_check import skewed_rows
    from tests.docs_blocks import blocks

    rows = photos(n_per_class=6)
    write_imagefolder(tmp_path / "data", {"train": rows[::2] + rows[1::2][:3], "val": rows[1::2][3:]}, fmt="jpg")
    # Two training images pipeline() reads otherwise than training (16-bit, transparent): the log and card say so.
    odd = skewed_rows()
    odd[0][0].save(tmp_path / "data" / "train" / "coffee" / "sixteen-bit.png")
    odd[3][0].save(tmp_path / "data" / "train" / "chelsea" / "cut-out.png")
    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny_vit), "--train_dir", str(tmp_path / "data" / "train"),
          "--validation_dir", str(tmp_path / "data" / "val"), "--output_dir", str(out), *FAST)
    check_output(out, ["astronaut", "chelsea", "coffee"])
    # 14 training images, 2 of them held out as the test part (test_fraction 0.1, seed 42): both odd ones train.
    assert any("Train/serve skew: 2 of 12 train images (16-bit: 1, transparent: 1)" in r.getMessage()
               for r in caplog.records)
    card = (out / "README.md").read_text()
    assert "### Images that `pipeline()` reads differently from training" in card
    assert "(train: 16-bit 1, transparent 1)" in card and "def to_rgb(image" in card
    assert "vit-pipeline predict path/to/output_dir images/" in card
    # The card's snippet, run as printed on the 16-bit image, gives the scores of the image as training decoded it.
    from PIL import Image
    from transformers import pipeline

    from vit_pipeline.data.decode import decode_rgb

    sixteen = tmp_path / "data" / "train" / "coffee" / "sixteen-bit.png"
    snippet = card.split("### Images that `pipeline()`")[1].split("```python\n")[1].split("```")[0]
    namespace = {}
    exec(snippet.replace("path/to/output_dir", str(out)).replace("image.png", str(sixteen))
         .replace("classifier(to_rgb", "result = classifier(to_rgb"), namespace)
    as_trained = pipeline("image-classification", model=str(out))(
        Image.fromarray(decode_rgb(str(sixteen)).permute(1, 2, 0).numpy()))
    assert namespace["result"] == as_trained
    # The docs page's fix does the same.
    (block,) = [b for b in blocks("docs/uncertainty.md") if b.kind == "run" and b.what.endswith(
        "::test_train_dir_and_validation_dir")]
    namespace = {}
    exec(block.body.replace("path/to/output_dir", str(out)).replace("image.png", str(sixteen))
         .replace("classifier(to_rgb", "result = classifier(to_rgb"), namespace)
    assert namespace["result"] == as_trained


@pytest.mark.slow
def test_console_command_and_resume(tiny_vit, digits_folder, tmp_path):
    """The real command in a subprocess; a second run in the same folder (in-process) resumes from its last
    checkpoint."""
    out = tmp_path / "out"
    args = ("train", "--model_name_or_path", str(tiny_vit), "--dataset_name", str(digits_folder),
            "--output_dir", str(out), *FAST, "--max_train_samples", "64", "--max_eval_samples", "32")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    steps = state["global_step"]
    assert steps == 2 * 4  # 64 rows / batch 16, 2 epochs
    second = run_cli_here(*args, "--num_train_epochs", "3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stderr
    state = json.loads((out / "trainer_state.json").read_text())
    # Continued from step 8 to step 12: one more epoch, not three from zero.
    assert state["global_step"] == 3 * 4
    train_losses = [e for e in state["log_history"] if "loss" in e]
    assert [e["epoch"] for e in train_losses][-1] == 3.0


@pytest.mark.slow
def test_failed_run_leaves_the_output_folder_as_it_was(tiny_vit, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "recipe.yaml").write_text("# the previous run's recipe\n")
    (out / "model.safetensors").write_bytes(b"previous weights")
    result = run_cli("train", "--model_name_or_path", str(tiny_vit), "--train_dir", str(tmp_path / "missing"),
                     "--output_dir", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("vit-pipeline: error: image folder")
    assert (out / "recipe.yaml").read_text() == "# the previous run's recipe\n"
    assert (out / "model.safetensors").read_bytes() == b"previous weights"
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "recipe.yaml"]
