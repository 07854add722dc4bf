"""The evaluation report's numbers equal scikit-learn's on the same predictions; the files it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics

from vit_pipeline.evaluation.report import (
    build_report,
    calibration_bins,
    expected_calibration_error,
    most_confused,
    prediction_rows,
    write_report,
)

KEYS = {"accuracy", "precision", "recall", "f1", "precision_weighted", "recall_weighted", "f1_weighted",
        "per_class", "labels", "confusion_matrix", "ece", "accuracy_ci95", "f1_ci95", "num_samples", "model", "dataset",
        "split"}


def predictions(n: int = 300, classes: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), labels] += 1.5  # better than chance, far from perfect
    return logits, labels


def test_report_equals_sklearn():
    logits, labels = predictions()
    names = [f"class_{i}" for i in range(8)]
    report = build_report(logits, labels, names, model="m", dataset="d", split="validation", seed=3)
    assert set(report) == KEYS | {"top5_accuracy"}
    predicted = logits.argmax(1)
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    for average, suffix in (("macro", ""), ("weighted", "_weighted")):
        assert report[f"f1{suffix}"] == pytest.approx(metrics.f1_score(labels, predicted, average=average))
        assert report[f"precision{suffix}"] == pytest.approx(metrics.precision_score(labels, predicted,
                                                                                     average=average))
        assert report[f"recall{suffix}"] == pytest.approx(metrics.recall_score(labels, predicted, average=average))
    assert report["top5_accuracy"] == pytest.approx(metrics.top_k_accuracy_score(labels, logits, k=5))
    f1 = metrics.f1_score(labels, predicted, average=None)
    support = np.bincount(labels, minlength=8)
    for i, name in enumerate(names):
        assert report["per_class"][name]["f1"] == pytest.approx(f1[i])
        assert report["per_class"][name]["support"] == support[i]
    matrix = np.asarray(report["confusion_matrix"])
    assert (matrix == metrics.confusion_matrix(labels, predicted)).all()
    assert matrix.sum() == report["num_samples"] == len(labels)
    assert report["labels"] == names
    low, high = report["accuracy_ci95"]
    assert low < report["accuracy"] < high and high - low < 0.2
    # One bootstrap for every interval: macro F1's and each class's recall hold their figures too.
    assert report["f1_ci95"][0] < report["f1"] < report["f1_ci95"][1]
    for row in report["per_class"].values():
        assert row["recall_ci95"][0] <= row["recall"] <= row["recall_ci95"][1]
    # Seeded: the same interval again.
    assert build_report(logits, labels, names, model="m", dataset="d", split="v", seed=3)["accuracy_ci95"] == [low,
                                                                                                          high]
    assert json.loads(json.dumps(report)) == report


def test_ece_by_hand():
    confidences = np.array([0.95, 0.95, 0.55, 0.55, 0.30])
    correct = np.array([True, False, True, True, False])
    # Bins (0.9, 0.9667], (0.5333, 0.6], (0.2667, 0.3333]: |0.5-0.95|*2/5 + |1-0.55|*2/5 + |0-0.3|*1/5.
    expected = 0.45 * 2 / 5 + 0.45 * 2 / 5 + 0.3 / 5
    assert expected_calibration_error(confidences, correct) == pytest.approx(expected)
    assert sum(b[3] for b in calibration_bins(confidences, correct)) == 5


def test_no_top5_with_few_classes():
    logits, labels = predictions(classes=5)
    report = build_report(logits, labels, list("abcde"), model="m", dataset="d", split="s")
    assert set(report) == KEYS


def test_write_report_files(tmp_path):
    from PIL import Image

    logits, labels = predictions(n=60, classes=4)
    names = ["cat", "dog", "owl", "eel"]
    report = build_report(logits, labels, names, model="m", dataset="d", split="s")
    rows = prediction_rows(logits, labels, names, [f"img{i}.png" for i in range(60)])
    written = write_report(report, tmp_path, predictions=rows, images=lambda i: Image.new("RGB", (16, 16)))
    for name in ("eval_report.json", "eval_report.md", "predictions.csv", "confusion_matrix.png",
                 "reliability_diagram.png", "misclassified.png"):
        assert (tmp_path / name).is_file() and tmp_path / name in written
    assert json.loads((tmp_path / "eval_report.json").read_text()) == report
    csv_lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert csv_lines[0] == "path,true_label,predicted_label,score" and len(csv_lines) == 61
    assert "![Confusion matrix](confusion_matrix.png)" in (tmp_path / "eval_report.md").read_text()


def test_many_classes_show_most_confused_pairs(tmp_path):
    logits, labels = predictions(n=400, classes=100)
    names = [f"c{i}" for i in range(100)]
    report = build_report(logits, labels, names, model="m", dataset="d", split="s")
    pairs = most_confused(report["confusion_matrix"], names, k=5)
    assert len(pairs) == 5 and all(t != p for t, p, *_ in pairs)
    assert pairs == sorted(pairs, key=lambda p: (-p[2], -p[3], p[0], p[1]))
    write_report(report, tmp_path)
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    md = (tmp_path / "eval_report.md").read_text()
    assert "best and worst" in md and md.count("\n| c") == 20 + 10  # 10 best, 10 worst, 10 pairs
