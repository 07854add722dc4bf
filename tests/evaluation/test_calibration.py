"""Temperature scaling: T fitted by NLL recovers a known overconfidence and lowers ECE on other images; folded into
the classifier, it divides the logits (both heads of a DeiT with distillation) and leaves every top-1 as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit_pipeline.evaluation.calibration import calibration_section, fit_temperature, fold_temperature
from vit_pipeline.evaluation.inference import softmax


def draw(rng, n: int, classes: int = 10, overconfidence: float = 3.0):
    """Labels drawn from softmax(z), and the logits of a model that is `overconfidence` times too sure (z x it)."""
    z = rng.normal(0.0, 1.5, size=(n, classes))
    probs = softmax(z)
    labels = np.minimum((probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1), classes - 1)
    return z * overconfidence, labels


def test_temperature_recovers_overconfidence_and_lowers_held_out_ece():
    rng = np.random.default_rng(0)
    logits, labels = draw(rng, 3000)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.15)
    # Other images of the same model: the scores of the calibrated logits are closer to how often it is right.
    held_logits, held_labels = draw(rng, 3000)
    section = calibration_section(held_logits / temperature, held_labels, temperature)["calibration"]
    assert section["ece_after"] < section["ece_before"] / 3
    assert section["nll_after"] < section["nll_before"]
    assert len(section["bins_before"]) == 15


@pytest.mark.parametrize("family", ["vit", "deit-distilled"])
def test_folding_divides_the_logits_and_keeps_top1(family):
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher, ViTConfig, ViTForImageClassification

    from tests.conftest import TINY_VIT

    torch.manual_seed(0)
    if family == "vit":
        # As many labels as hidden units: only the head is divided, not the layers that happen to have 32 outputs.
        model = ViTForImageClassification(ViTConfig(**TINY_VIT, num_labels=32)).eval()
    else:
        model = DeiTForImageClassificationWithTeacher(DeiTConfig(**TINY_VIT, num_labels=5)).eval()
    pixels = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits
        fold_temperature(model, 2.5)
        after = model(pixel_values=pixels).logits
    torch.testing.assert_close(after, before / 2.5, rtol=1e-4, atol=1e-5)
    assert torch.equal(after.argmax(-1), before.argmax(-1))
    assert model.config.calibration_temperature == 2.5
