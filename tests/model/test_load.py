"""load_model: labels in the config, a fresh head when needed, clear errors for wrong checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from vit_pipeline import PipelineError
from vit_pipeline.config import ModelArguments
from vit_pipeline.model.load import load_image_processor, load_model

LABELS = ["cat", "dog", "bird", "fish", "frog"]


def test_labels_and_fresh_head(tiny_vit):
    from transformers import ViTForImageClassification

    original = ViTForImageClassification.from_pretrained(tiny_vit)
    model = load_model(ModelArguments(model_name_or_path=str(tiny_vit)), LABELS)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.label2id == {label: i for i, label in enumerate(LABELS)}
    assert model.classifier.out_features == 5
    # The backbone weights come from the checkpoint; only the 3-way head was replaced.
    assert torch.equal(model.vit.embeddings.patch_embeddings.projection.weight,
                       original.vit.embeddings.patch_embeddings.projection.weight)


def test_backbone_checkpoint_gets_a_head(tiny_backbone):
    model = load_model(ModelArguments(model_name_or_path=str(tiny_backbone)), LABELS[:2])
    assert type(model).__name__ == "ViTForImageClassification" and model.num_labels == 2


def test_same_labels_keep_the_head(tiny_vit):
    from transformers import ViTForImageClassification

    original = ViTForImageClassification.from_pretrained(tiny_vit)
    model = load_model(ModelArguments(model_name_or_path=str(tiny_vit)), ["a", "b", "c"])
    assert torch.equal(model.classifier.weight, original.classifier.weight)


def test_from_scratch_and_missing_weights(tiny_vit, tmp_path):
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (config_only / name).write_text((tiny_vit / name).read_text())
    with pytest.raises(PipelineError, match="holds no weights.*set from_scratch: true"):
        load_model(ModelArguments(model_name_or_path=str(config_only)), LABELS)
    model = load_model(ModelArguments(model_name_or_path=str(config_only), from_scratch=True), LABELS)
    assert model.num_labels == 5
    assert load_image_processor(ModelArguments(model_name_or_path=str(config_only))).size["height"] == 32


def test_not_an_image_classifier(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32,
                                                      "num_hidden_layers": 1, "num_attention_heads": 2,
                                                      "intermediate_size": 37, "vocab_size": 100}))
    with pytest.raises(PipelineError, match="is a bert checkpoint, which AutoModelForImageClassification cannot build"):
        load_model(ModelArguments(model_name_or_path=str(tmp_path)), LABELS)


def test_unreachable_hub_checkpoint_is_one_line():
    with pytest.raises(PipelineError, match="cannot load the config of 'org/not-here'.*HF_HUB_OFFLINE") as err:
        load_model(ModelArguments(model_name_or_path="org/not-here"), LABELS)
    assert "\n" not in str(err.value)
    with pytest.raises(PipelineError, match="cannot load the image processor of 'org/not-here'"):
        load_image_processor(ModelArguments(model_name_or_path="org/not-here"))
