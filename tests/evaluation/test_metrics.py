"""Metrics through evaluate modules that load offline, with the same numbers as scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, top_k_accuracy_score
from transformers import EvalPrediction

from vit_pipeline.evaluation.metrics import ClassificationMetrics, compute_metrics


@pytest.mark.parametrize("num_labels", [2, 5, 12])
def test_same_numbers_as_sklearn(num_labels):
    rng = np.random.default_rng(num_labels)
    labels = rng.integers(0, num_labels, 300)
    # Better than chance, so the scores are not all near zero; one class never predicted (zero division).
    logits = rng.normal(size=(300, num_labels)) + 2.0 * np.eye(num_labels)[labels] * (rng.random(300) < 0.6)[:, None]
    logits[:, 0] -= 100.0
    predictions = logits.argmax(-1)
    ours = ClassificationMetrics(num_labels)(EvalPrediction(predictions=logits, label_ids=labels))
    classes = list(range(num_labels))
    assert ours["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert ours["f1"] == pytest.approx(f1_score(labels, predictions, average="macro", labels=classes,
                                                zero_division=0))
    assert ours["precision"] == pytest.approx(precision_score(labels, predictions, average="macro", labels=classes,
                                                              zero_division=0))
    assert ours["recall"] == pytest.approx(recall_score(labels, predictions, average="macro", labels=classes,
                                                        zero_division=0))
    if num_labels > 5:
        assert ours["top5_accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5, labels=classes))
    else:
        # Top-5 of 5 classes or fewer is always 1: not reported.
        assert "top5_accuracy" not in ours


def test_offline_and_tuple_predictions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    result = ClassificationMetrics(2)(EvalPrediction(predictions=(logits,), label_ids=np.array([0, 1, 1])))
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert compute_metrics(logits, np.array([0, 1, 0]), 2)["f1"] == 1.0
