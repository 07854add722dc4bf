"""`predict_logits` gives what `pipeline("image-classification")` gives on the same real images."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import digits, photos, to_dataset
from vit_pipeline import PipelineError
from vit_pipeline.evaluation.inference import load_trained, match_labels, predict_logits, softmax


def test_logits_equal_pipeline(digits_classifier):
    from transformers import pipeline

    model, processor = load_trained(str(digits_classifier))
    rows = digits(n_per_class=1) + [(im, 0) for im, _ in photos(n_per_class=1)]
    dataset = to_dataset(rows)
    logits, labels = predict_logits(model, dataset, processor, batch_size=8)
    assert logits.shape == (len(rows), 10) and list(labels) == [label for _, label in rows]
    classifier = pipeline("image-classification", model=str(digits_classifier), device="cpu")
    probs = softmax(logits)
    for i, top in enumerate(classifier([image for image, _ in rows], top_k=3)):
        assert [r["label"] for r in top] == [model.config.id2label[j] for j in np.argsort(-probs[i])[:3]]
        assert [r["score"] for r in top] == pytest.approx(sorted(probs[i])[::-1][:3], abs=1e-4)


def test_unknown_label_named(digits_classifier):
    model, _ = load_trained(str(digits_classifier))
    assert match_labels(["3", "0"], model) == [3, 0]
    with pytest.raises(PipelineError, match="label 'cat' of the dataset is not one the model knows"):
        match_labels(["3", "cat"], model)


def test_no_such_model(tmp_path):
    with pytest.raises(PipelineError, match="no model"):
        load_trained(str(tmp_path / "nowhere"))
    with pytest.raises(PipelineError, match="holds no trained model"):
        load_trained(str(tmp_path))
