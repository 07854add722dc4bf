"""Tiny random checkpoints of several model families trained through the real `train` command with the same recipe
keys, each output reloaded with `transformers.pipeline("image-classification")`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAMILIES, FAST, photos, save_tiny_model
from vit_pipeline.cli import main


def train(*args: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args])
        raise SystemExit(0)
    assert exit_info.value.code == 0


# 3-6 s each on 2 quiet CPU cores (DeiT, BEiT, Swin and EfficientNet, 4-10 s, are in the slow tier).
FAST_FAMILIES = ("resnet", "convnext", "dinov2")


@pytest.mark.parametrize("family", [f if f in FAST_FAMILIES else pytest.param(f, marks=pytest.mark.slow)
                                    for f in FAMILIES if f != "vit"])
def test_family_trains_with_the_same_recipe_and_reloads_in_pipeline(family, photos_parquet, tmp_path):
    from transformers import pipeline

    checkpoint = save_tiny_model(tmp_path / "ckpt", family, num_labels=5)
    out = tmp_path / "out"
    # The same keys for every family, layer-wise decay included (blocks for ViTs, stages for CNNs and Swin).
    train("--model_name_or_path", str(checkpoint), "--dataset_name", str(photos_parquet), "--output_dir", str(out),
          *FAST, "--num_train_epochs", "1", "--learning_rate", "1e-3", "--layer_decay", "0.8")
    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and "eval_f1" in results
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == family and len(config["id2label"]) == 3
    predictions = pipeline("image-classification", model=str(out))([im for im, _ in photos(n_per_class=1)])
    assert {p[0]["label"] for p in predictions} <= {"astronaut", "coffee", "chelsea"}
    # The card shows where the model looks for every family: rollout for ViTs, Grad-CAM for CNNs and Swin.
    method, title = ("rollout", "Attention rollout") if family in ("deit", "beit", "dinov2") else ("gradcam",
                                                                                                  "Grad-CAM")
    explained = json.loads((out / "explain_report.json").read_text())
    assert explained["method"] == method and explained["faithfulness"]["images"] == 8
    card = (out / "README.md").read_text()
    assert f"{title} (" in card and "](explanation_maps.png)" in card and (out / "explanation_maps.png").is_file()
    assert f"mean deletion AUC\n{explained['faithfulness']['deletion_auc']:.3f} against" in card


def test_a_cnn_trains_on_the_accelerate_backend_with_frozen_backbone_and_ema(photos_parquet, tmp_path):
    from safetensors.torch import load_file

    checkpoint = save_tiny_model(tmp_path / "ckpt", "convnext", num_labels=3)
    out = tmp_path / "out"
    train("--model_name_or_path", str(checkpoint), "--dataset_name", str(photos_parquet), "--output_dir", str(out),
          *FAST, "--num_train_epochs", "1", "--backend", "accelerate", "--freeze_backbone", "true",
          "--ema_decay", "0.9", "--image_size", "40")
    before, after = load_file(checkpoint / "model.safetensors"), load_file(out / "model.safetensors")
    backbone = [k for k in before if k.startswith("convnext.")]
    assert backbone and all((before[k] == after[k]).all() for k in backbone)  # frozen
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"shortest_edge": 40}
    assert "eval_accuracy" in json.loads((out / "eval_results.json").read_text())
