"""Explanation maps of three families (ViT, ResNet, ConvNeXt) on real photos: every method at the input size, Grad-CAM
on a ViT as pytorch-grad-cam computes it, faithful maps beating a random one on trained models, one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import PHOTO_NAMES, photos, tiny_family
from tests.docs_blocks import blocks
from vit_pipeline import PipelineError
from vit_pipeline.evaluation.cam import METHODS, check_method, default_method, explanation_maps, methods_for
from vit_pipeline.evaluation.explain import explain_images, score_explanations
from vit_pipeline.evaluation.faithfulness import auc, summarize

FAMILIES = ("vit", "resnet", "convnext")


def tiny(family: str, seed: int = 0):
    """A random tiny classifier of `family` over the photo classes, in eval mode, and its image processor."""
    from transformers import AutoModelForImageClassification

    torch.manual_seed(seed)
    config, processor = tiny_family(family)
    config.id2label, config.label2id = dict(enumerate(PHOTO_NAMES)), {n: i for i, n in enumerate(PHOTO_NAMES)}
    return AutoModelForImageClassification.from_config(config).eval(), processor


def pasted_photos(n_per_class: int = 4, size: int = 32, patch: int = 12, seed: int = 0):
    """Real photo crops (12 px) pasted at random places on a grey canvas: the class is in one region, so a faithful
    map can be told from a random one."""
    rng = np.random.default_rng(seed)
    out = []
    for image, label in photos(n_per_class=n_per_class, size=patch, seed=seed):
        canvas = np.full((size, size, 3), 128, np.uint8)
        top, left = rng.integers(0, size - patch, 2)
        canvas[top:top + patch, left:left + patch] = np.asarray(image)
        out.append((Image.fromarray(canvas), label))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_maps_at_the_models_input_size(family):
    from vit_pipeline.data.transforms import image_spec

    model, processor = tiny(family)
    image = photos(n_per_class=1, size=48)[0][0]
    size = image_spec(processor).output_size
    assert methods_for(model) == (list(METHODS) if family == "vit" else list(METHODS[1:]))
    assert default_method(model) == ("rollout" if family == "vit" else "gradcam")
    for method in methods_for(model):
        item, = explain_images(model, processor, [image], method)
        assert item.saliency.shape == size and 0.0 <= item.saliency.min() <= item.saliency.max() <= 1.0
        assert item.overlay.size == item.view.size == size[::-1] and item.label in PHOTO_NAMES
    # --target: the map of the class asked for, scored with that class's probability.
    item, = explain_images(model, processor, [image], "gradcam", target=2)
    assert item.target == 2 and item.label == PHOTO_NAMES[2]


def test_gradcam_on_a_vit_equals_pytorch_grad_cams_own_output():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    model, processor = tiny("vit")
    from vit_pipeline.evaluation.rollout import model_view

    pixels = torch.cat([model_view(image, processor)[1] for image, _ in photos(n_per_class=1, size=48)])
    ours = explanation_maps(model, pixels, "gradcam", [0, 1, 2])

    class Logits(torch.nn.Module):  # what pytorch-grad-cam's HF tutorial wraps a transformers model in
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).logits

    # The last block's first norm on the 4 x 4 patch grid, [CLS] dropped: the library's own ViT reshape.
    with GradCAM(Logits(model), [model.vit.layers[-1].layernorm_before],
                 reshape_transform=lambda t: vit_reshape_transform(t, 4, 4)) as cam:
        theirs = cam(input_tensor=pixels, targets=[ClassifierOutputTarget(i) for i in range(3)])
    assert ours.shape == theirs.shape == (3, 32, 32) and ours.std() > 0.05
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.slow
def test_faithful_maps_beat_a_random_map_on_trained_models():
    from vit_pipeline.evaluation.rollout import model_view

    rows = pasted_photos()
    labels = torch.tensor([PHOTO_NAMES.index(label) for _, label in rows])
    for family in FAMILIES:
        model, processor = tiny(family)
        pixels = torch.cat([model_view(image, processor)[1] for image, _ in rows])
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(300):  # until every image is right, with confidence
            loss = model(pixel_values=pixels, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if loss.item() < 0.01:
                break
        model.eval()
        with torch.no_grad():
            assert (model(pixel_values=pixels).logits.argmax(-1) == labels).all(), family
        method = default_method(model)
        items = explain_images(model, processor, [image for image, _ in rows], method)
        summary = summarize(score_explanations(model, items))
        assert summary["images"] == len(rows)
        # Deleting the most salient pixels first kills the class faster than deleting at random.
        assert summary["deletion_auc"] < summary["random_deletion_auc"] - 0.05, (family, method, summary)
        assert summary["insertion_auc"] > summary["random_insertion_auc"], (family, method, summary)


def test_auc_of_equal_steps():
    assert auc(np.ones(17)) == pytest.approx(1.0) and auc(np.linspace(1, 0, 17)) == pytest.approx(0.5)


def test_a_method_that_does_not_apply_is_refused_in_one_line_naming_those_that_do():
    model, _ = tiny("resnet")
    with pytest.raises(PipelineError) as info:
        check_method(model, "rollout")
    message = str(info.value)
    assert message.startswith("--method rollout does not apply to ResNetForImageClassification (resnet: no ViT-style")
    assert "use gradcam, gradcam++, xgradcam" in message and "\n" not in message
    with pytest.raises(PipelineError, match=r"unknown method 'gradcam\+\+\+': use one of rollout, gradcam"):
        check_method(model, "gradcam+++")


def test_the_config_lists_the_same_methods():
    from vit_pipeline.config.commands import EXPLAIN_METHODS

    assert EXPLAIN_METHODS == METHODS


def test_without_grad_cam_a_cnn_gets_a_one_line_note_and_a_vit_its_rollout(monkeypatch, tmp_path):
    import sys

    from vit_pipeline.evaluation.explain import explain_run

    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # not installed
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam.utils.model_targets", None)
    data = [{"image": image} for image, _ in photos(n_per_class=1, size=48)]
    model, processor = tiny("resnet")
    with pytest.raises(PipelineError, match=r"needs pytorch-grad-cam, the explain extra: pip install ") as info:
        explanation_maps(model, torch.zeros(1, 3, 32, 32), "gradcam", [0])
    # The line docs/commands/explain.md shows.
    page = "docs/commands/explain.md"
    shown = [b.body.strip() for b in blocks(page) if b.what and b.what.endswith(
        "::test_without_grad_cam_a_cnn_gets_a_one_line_note_and_a_vit_its_rollout")]
    assert shown == [f"vit-pipeline: error: {info.value}"]
    shown = explain_run(model, processor, data, [0, 1], ["a", "b"], tmp_path, "cnn")
    assert shown["explanation"] is None and "needs the explain extra" in shown["explanation_note"]
    vit, processor = tiny("vit")
    shown = explain_run(vit, processor, data, [0, 1], ["a", "b"], tmp_path, "vit")
    assert shown["explanation"] == "explanation_maps.png" and shown["faithfulness"]["images"] == 2
