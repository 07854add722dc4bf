"""Bootstrap intervals hold their figure and narrow with more images; McNemar's exact p-value equals statsmodels' on
the same counts and a hand case; the paired comparison counts the discordant images."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from vit_pipeline.evaluation.uncertainty import bootstrap_intervals, mcnemar_exact, paired_comparison, verdict


def predictions(n: int, classes: int = 4, right: float = 0.8, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    wrong = rng.random(n) > right
    return np.where(wrong, (labels + rng.integers(1, classes, n)) % classes, labels), labels


def test_intervals_hold_the_figure_and_shrink_with_more_images():
    widths = []
    for n in (100, 1600):
        predicted, labels = predictions(n)
        intervals = bootstrap_intervals(predicted, labels, 4, seed=1)
        accuracy = metrics.accuracy_score(labels, predicted)
        f1 = metrics.f1_score(labels, predicted, average="macro")
        recall = metrics.recall_score(labels, predicted, average=None)
        assert intervals["accuracy"][0] < accuracy < intervals["accuracy"][1]
        assert intervals["f1"][0] < f1 < intervals["f1"][1]
        for c in range(4):
            assert intervals["recall"][c][0] < recall[c] < intervals["recall"][c][1]
        widths.append((np.diff(intervals["accuracy"])[0], np.diff(intervals["f1"])[0]))
        assert bootstrap_intervals(predicted, labels, 4, seed=1) == intervals  # seeded
    # 16 times the images: about a quarter of the width (1 / sqrt(n)).
    for small, large in zip(*widths, strict=True):
        assert 0.15 < large / small < 0.4
    # A class with no image has no recall, hence no interval.
    assert bootstrap_intervals(np.array([0, 1, 1]), np.array([0, 1, 0]), 3)["recall"][2] is None


def test_mcnemar_equals_statsmodels_and_a_hand_case():
    from statsmodels.stats.contingency_tables import mcnemar

    for a_only, b_only in [(0, 0), (1, 0), (3, 9), (10, 10), (25, 8), (0, 40), (120, 95)]:
        table = [[50, a_only], [b_only, 30]]  # rows: A right / wrong, columns: B right / wrong
        expected = 1.0 if a_only + b_only == 0 else mcnemar(table, exact=True).pvalue
        assert mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-9)
    # By hand: 1 against 5 discordant images, 2 * P(X <= 1) with X ~ Binomial(6, 1/2) = 2 * 7/64.
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)


def test_paired_comparison_counts_the_images_only_one_model_gets_right():
    a = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1] * 10, dtype=bool)
    b = np.array([1, 0, 0, 0, 0, 1, 1, 1, 1, 1] * 10, dtype=bool)
    pair = paired_comparison(a, b, seed=0)
    assert (pair["images"], pair["a_only"], pair["b_only"]) == (100, 30, 10)
    assert pair["accuracy_a"] == 0.8 and pair["accuracy_b"] == 0.6 and pair["difference"] == pytest.approx(0.2)
    assert pair["difference_ci95"][0] < 0.2 < pair["difference_ci95"][1]
    assert pair["p_value"] == pytest.approx(mcnemar_exact(30, 10)) and pair["p_value"] < 0.01
    assert verdict("A", "B", pair).startswith("A is better than B on this data")
    assert verdict("A", "B", paired_comparison(a, a)).startswith("Neither is shown better")
