"""Every dataset recipe runs through the real command on an offline stand-in with its dataset's real schema (columns,
feature types, label names, split names), with a tiny ViT and one short epoch, and its output reloads with
`pipeline("image-classification")`.

Overrides are limited to what a CPU test must change: the checkpoint (a tiny random ViT of the same kind: bare
backbone for ImageNet-21k recipes, classifier for fine-tuned ones), the dataset location (the stand-in folder),
the resolution (through the tiny checkpoint, and image_size for high-resolution recipes), epochs and batch sizes,
the output folder, and the loader's worker count and progress bar (which change no result).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests import standins
from tests.commands.test_train import check_output, train
from tests.conftest import save_tiny_vit

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TEST_IMAGE_SIZE = 48  # for recipes that change the resolution: 6 x 6 patches of the tiny ViT's 8 px


def test_every_dataset_recipe_has_a_standin():
    # recipes/accelerate/ holds `accelerate launch` configs; the quickstart's built-in data set is tested elsewhere.
    recipes = {str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml")
               if "accelerate" not in p.relative_to(RECIPES).parts} - {"quickstart.yaml"}
    # A distillation recipe needs its Hub teacher as well (tests/training/test_distillation.py runs distillation on
    # stand-ins); its dataset's schema must be one a stand-in already checks.
    distilled = {name for name in recipes if yaml.safe_load((RECIPES / name).read_text()).get(
        "teacher_model_name_or_path")}
    covered = {standin.hub_id for standin in standins.STANDINS.values()}
    assert all(yaml.safe_load((RECIPES / name).read_text())["dataset_name"] in covered for name in distilled)
    assert recipes - distilled == set(standins.STANDINS), "add a stand-in to tests/standins.py for each new recipe"


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-classifier"), num_labels=5)


def run_recipe(name: str, checkpoint: Path, data: Path, out: Path, *extra: str) -> dict:
    recipe = yaml.safe_load((RECIPES / name).read_text())
    args = ["--model_name_or_path", str(checkpoint), "--dataset_name", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
            "--dataloader_num_workers", "0", "--disable_tqdm", "true"]
    args += ["--max_steps", "2"] if recipe.get("max_steps") else ["--num_train_epochs", "1"]
    if recipe.get("gradient_accumulation_steps"):
        args += ["--gradient_accumulation_steps", "1"]  # part of the batch size: 32 images a step are plenty here
    if recipe.get("image_size"):
        args += ["--image_size", str(TEST_IMAGE_SIZE)]
    train(str(RECIPES / name), *args, *extra)
    return recipe


@pytest.mark.parametrize("name", sorted(standins.STANDINS))
@pytest.mark.slow
def test_recipe_runs_on_its_dataset_schema(name, tiny_classifier, tiny_backbone, tmp_path):
    standin = standins.STANDINS[name]
    recipe = yaml.safe_load((RECIPES / name).read_text())
    # The recipe names the real dataset, and spells out its columns and splits.
    assert recipe["dataset_name"] == standin.hub_id
    assert recipe["label_column_name"] == standin.label_column
    assert recipe["image_column_name"] in standin.columns
    assert recipe.get("train_split", "train") in standin.splits
    assert recipe.get("eval_split") is None or recipe["eval_split"] in standin.splits
    data = standins.build(standin, tmp_path / "data")
    checkpoint = tiny_backbone if recipe["model_name_or_path"].endswith("-in21k") else tiny_classifier
    out = tmp_path / "out"
    run_recipe(name, checkpoint, data, out)

    labels = sorted(standin.labels) if standin.columns[standin.label_column] == "string_label" else standin.labels
    if standin.columns[standin.label_column] == "flags":
        check_multilabel_output(out, labels)
    else:
        check_output(out, labels)
    config = json.loads((out / "config.json").read_text())
    processor = json.loads((out / "preprocessor_config.json").read_text())
    if recipe.get("image_size"):
        # Saved at the new resolution: config, processor and position embeddings agree, pipeline() ran at 48 px.
        assert config["image_size"] == TEST_IMAGE_SIZE
        assert processor["size"] == {"height": TEST_IMAGE_SIZE, "width": TEST_IMAGE_SIZE}
    if recipe.get("use_peft"):
        assert not (out / "adapter_config.json").exists() and (out / "adapter" / "adapter_config.json").is_file()
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    for key in ("image_column_name", "label_column_name", "eval_split", "layer_decay", "ema_decay", "mixup_alpha",
                "auto_augment", "use_peft", "class_weighted_loss", "backbone_learning_rate", "label_flag_names"):
        if key in recipe:
            assert resolved[key] == recipe[key], key


def check_multilabel_output(out: Path, labels: list[str]) -> None:
    """A multi-label output folder: problem type, label names, map in model-index, thresholds, sigmoid scores."""
    from huggingface_hub import metadata_load
    from transformers import pipeline

    from tests.conftest import photos

    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
    metrics = {m["type"] for m in metadata_load(out / "README.md")["model-index"][0]["results"][0]["metrics"]}
    assert {"map", "f1_micro", "f1_macro", "auroc"} <= metrics
    assert set(json.loads((out / "thresholds.json").read_text())["thresholds"]) == set(labels)
    # The run's multi-label evaluation report, shown by the card.
    report = json.loads((out / "eval_report.json").read_text())
    assert report["labels"] == labels and "map" in report and (out / "pr_curves.png").is_file()
    assert "](pr_curves.png)" in (out / "README.md").read_text()
    classifier = pipeline("image-classification", model=str(out))
    prediction = classifier(photos(n_per_class=1)[0][0].convert("RGB"), top_k=len(labels))
    assert {p["label"] for p in prediction} == set(labels)
    assert sum(p["score"] for p in prediction) != pytest.approx(1.0, abs=1e-3)  # independent sigmoid scores


@pytest.mark.parametrize("change", ["renamed label column", "renamed split"])
def test_recipe_fails_when_the_dataset_schema_drifts(change, tiny_backbone, tmp_path, capsys):
    standin = standins.STANDINS["beans/vit-base.yaml"]
    if change == "renamed label column":
        data = standins.build(standin, tmp_path / "data", rename={"labels": "label"})
        expected = "label column 'labels' not in the dataset"
    else:
        standin = standins.Standin(**{**standin.__dict__, "splits": {"train": 4, "valid": 2, "test": 2}})
        data = standins.build(standin, tmp_path / "data")
        expected = "no 'validation' split"
    with pytest.raises(SystemExit) as exit_info:
        from vit_pipeline.cli import main

        main(["train", str(RECIPES / "beans/vit-base.yaml"), "--model_name_or_path", str(tiny_backbone),
              "--dataset_name", str(data), "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
