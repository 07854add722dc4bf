"""Multi-label metrics equal scikit-learn's on the same scores; thresholds are tuned for F1 and saved."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from transformers import EvalPrediction

from vit_pipeline.evaluation.metrics import metrics_for
from vit_pipeline.evaluation.multilabel import (
    load_thresholds,
    per_class_report,
    sigmoid,
    threshold_summary,
    tune_thresholds,
    write_thresholds,
)


def scored(n=200, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, classes)) < np.linspace(0.5, 0.05, classes)).astype(np.float32)
    labels[:, -1] = 0  # a class with no positive in the eval split: left out of map and the macro averages
    logits = rng.normal(size=(n, classes)) + 1.5 * labels
    return logits, labels


def test_same_numbers_as_sklearn():
    logits, labels = scored()
    metrics = metrics_for(5, multi_label=True)
    ours = metrics(EvalPrediction(predictions=(logits,), label_ids=labels))
    scores, y = 1 / (1 + np.exp(-logits)), labels.astype(int)
    predicted = (scores >= 0.5).astype(int)
    present = [0, 1, 2, 3]
    assert ours["map"] == pytest.approx(np.mean([average_precision_score(y[:, c], scores[:, c]) for c in present]))
    assert ours["map_micro"] == pytest.approx(average_precision_score(y, scores, average="micro"))
    assert ours["auroc"] == pytest.approx(roc_auc_score(y[:, present], scores[:, present], average="macro"))
    assert ours["f1_micro"] == pytest.approx(f1_score(y, predicted, average="micro"))
    assert ours["f1_macro"] == pytest.approx(f1_score(y, predicted, labels=present, average="macro"))
    assert ours["precision"] == pytest.approx(precision_score(y, predicted, labels=present, average="macro"))
    assert ours["recall"] == pytest.approx(recall_score(y, predicted, labels=present, average="macro"))
    assert ours["subset_accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert ours["hamming_loss"] == pytest.approx(hamming_loss(y, predicted))
    # The scores of the latest call are kept for the per-class table and the thresholds.
    np.testing.assert_allclose(metrics.last[0], scores)
    assert sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist() == [0.0, 0.5, 1.0]


def test_perfect_ranking_scores_one():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    ours = metrics_for(2, multi_label=True)(EvalPrediction(predictions=(labels * 8 - 4), label_ids=labels))
    assert ours["map"] == ours["map_micro"] == ours["f1_macro"] == ours["subset_accuracy"] == 1.0
    assert ours["hamming_loss"] == 0.0


def test_thresholds_maximise_each_class_f1_and_are_saved(tmp_path):
    logits, labels = scored(seed=1)
    scores = sigmoid(logits)
    thresholds = tune_thresholds(scores, labels)
    for c in range(4):
        best = max(f1_score(labels[:, c], scores[:, c] >= t) for t in np.unique(scores[:, c]))
        assert f1_score(labels[:, c], scores[:, c] >= thresholds[c]) == pytest.approx(best)
    assert thresholds[4] == 0.5  # no positive to tune on
    names = list("abcde")
    summary = threshold_summary(scores, labels, names, "validation")
    assert summary["tuned_on"] == "validation" and "optimistic" in summary["note"]
    assert summary["f1_macro_tuned"] >= metrics_for(5, True)(EvalPrediction(logits, labels))["f1_macro"]
    write_thresholds(summary, tmp_path)
    assert load_thresholds(tmp_path) == pytest.approx(dict(zip(names, thresholds, strict=True)), abs=1e-6)
    assert json.loads((tmp_path / "thresholds.json").read_text())["default_threshold"] == 0.5
    rows = per_class_report(scores, labels, names, thresholds)
    assert [r["support"] for r in rows] == labels.sum(0).astype(int).tolist()
    assert rows[4]["ap"] is None
    assert rows[0]["ap"] == pytest.approx(average_precision_score(labels[:, 0], scores[:, 0]))
    assert rows[0]["f1"] == pytest.approx(f1_score(labels[:, 0], scores[:, 0] >= 0.5))
    assert load_thresholds(tmp_path / "missing") is None
