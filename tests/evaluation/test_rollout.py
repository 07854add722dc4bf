"""Attention rollout on a real (tiny, random) ViT and a real photo; CNNs are refused in one line."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.conftest import photos
from vit_pipeline import PipelineError
from vit_pipeline.evaluation.rollout import attention_rollout, overlay


def tiny_vit(**overrides):
    from transformers import ViTConfig, ViTForImageClassification

    from tests.conftest import TINY_VIT

    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(**{**TINY_VIT, **overrides}, num_labels=3)).eval()


@pytest.mark.parametrize("head_fusion", ["mean", "max"])
def test_rollout_map_shape_and_range(head_fusion):
    model = tiny_vit()
    before = model.config._attn_implementation
    pixels = torch.randn(2, 3, 32, 32)
    maps = attention_rollout(model, pixels, head_fusion=head_fusion, discard_ratio=0.5)
    assert maps.shape == (2, 4, 4)
    assert maps.min() >= 0 and maps.max() <= 1 and torch.isclose(maps.amax(dim=(1, 2)), torch.ones(2)).all()
    # The model goes back to its own attention kernel after the pass.
    assert model.config._attn_implementation == before


def test_rollout_without_discard_is_plain_product():
    model = tiny_vit()
    pixels = torch.randn(1, 3, 32, 32)
    model.set_attn_implementation("eager")
    attentions = model(pixel_values=pixels, output_attentions=True).attentions
    result = torch.eye(17)
    for attention in attentions:
        step = (attention[0].mean(0) + torch.eye(17)) / 2
        result = (step / step.sum(-1, keepdim=True)) @ result
    expected = result[0, 1:].reshape(4, 4)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(attention_rollout(model, pixels, discard_ratio=0.0)[0], expected, atol=1e-5)


def test_cnn_refused():
    from transformers import ResNetConfig, ResNetForImageClassification

    model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1],
                                                      num_labels=2))
    with pytest.raises(PipelineError, match="ViT-family"):
        attention_rollout(model, torch.randn(1, 3, 32, 32))


def test_overlay_keeps_size():
    image = photos(n_per_class=1, size=48)[0][0]
    mask = torch.rand(4, 4)
    out = overlay(image, mask)
    assert isinstance(out, Image.Image) and out.size == image.size and out.mode == "RGB"


def test_rollout_images_one_pass_matches_the_two_functions(digits_classifier):
    from vit_pipeline.evaluation.inference import load_trained
    from vit_pipeline.evaluation.rollout import model_view, rollout_images

    model, processor = load_trained(str(digits_classifier))
    image = photos(n_per_class=1, size=48)[0][0]
    (view, heat, label, score), = rollout_images(model, processor, [image], discard_ratio=0.5)
    _, pixel_values = model_view(image, processor)
    with torch.no_grad():
        probs = model(pixel_values=pixel_values).logits.softmax(-1)[0]
    assert label == model.config.id2label[int(probs.argmax())] and score == pytest.approx(float(probs.max()), abs=1e-5)
    mask = attention_rollout(model, pixel_values, discard_ratio=0.5)[0]
    assert heat.tobytes() == overlay(view, mask).tobytes()
