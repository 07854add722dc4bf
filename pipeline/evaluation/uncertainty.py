"""How sure a figure is: percentile bootstrap intervals of the report's metrics, and McNemar's exact test between two
models scored on the same images.

`bootstrap_intervals` resamples the eval images once (seeded) and scores accuracy, macro F1 and each class's recall on
the same draws, so the intervals of one report come from one bootstrap. `paired_comparison` answers "is model A better
than model B on these images?": the difference in accuracy, its paired bootstrap interval, and McNemar's exact p-value
(the two-sided binomial test on the images exactly one of the two models gets right).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
LEVEL = 0.95
# Below this p-value a difference is called significant in words (the usual 5% level, the intervals' 95%).
SIGNIFICANCE = 0.05


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float]:
    """The central `level` share of `values` (bootstrap replicates), as [low, high]; NaN replicates are ignored."""
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(predictions: np.ndarray, labels: np.ndarray, num_labels: int, seed: int = 0,
                        resamples: int = BOOTSTRAP_RESAMPLES, level: float = LEVEL) -> dict[str, Any]:
    """Percentile bootstrap intervals of accuracy, macro F1 and per-class recall, from one seeded resampling.

    Each replicate draws the n images with replacement and scores them as the report does (macro F1 over every class,
    a class with no true and no predicted image scoring 0). A class's recall is undefined in a replicate that drew
    none of its images: those replicates are left out of its interval.

    Args:
        predictions: [n] predicted label ids.
        labels: [n] true label ids.
        num_labels: the number of classes.
        seed: seeds the resampling (the same seed gives the same intervals).
        resamples: how many bootstrap replicates.
        level: the coverage of the intervals.

    Returns:
        `accuracy` and `f1`: [low, high]; `recall`: one [low, high] per class, None for a class with no image.
    """
    predictions, labels = np.asarray(predictions, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return {"accuracy": [0.0, 0.0], "f1": [0.0, 0.0], "recall": [None] * num_labels}
    rng = np.random.default_rng(seed)
    accuracy, f1 = np.empty(resamples), np.empty(resamples)
    recall = np.full((resamples, num_labels), np.nan)
    for r in range(resamples):
        draw = rng.integers(0, n, size=n)
        truth, guess = labels[draw], predictions[draw]
        hit = truth == guess
        true_count = np.bincount(truth, minlength=num_labels)
        hits = np.bincount(truth[hit], minlength=num_labels)
        # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (true count + predicted count); 0 where both are 0.
        both = true_count + np.bincount(guess, minlength=num_labels)
        accuracy[r] = hit.mean()
        f1[r] = np.divide(2 * hits, both, out=np.zeros(num_labels), where=both > 0).mean()
        np.divide(hits, true_count, out=recall[r], where=true_count > 0)
    present = np.bincount(labels, minlength=num_labels) > 0
    return {"accuracy": percentile_interval(accuracy, level), "f1": percentile_interval(f1, level),
            "recall": [percentile_interval(recall[:, c], level) if present[c] else None for c in range(num_labels)]}


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact test: the two-sided binomial p-value of `a_only` successes in `a_only + b_only` at 1/2.

    Args:
        a_only: images model A gets right and model B wrong.
        b_only: images model B gets right and model A wrong.

    Returns:
        The p-value (1.0 when the two models disagree on no image).
    """
    from scipy.stats import binomtest

    if a_only + b_only == 0:
        return 1.0
    return float(binomtest(int(a_only), int(a_only + b_only), 0.5).pvalue)


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0,
                      resamples: int = BOOTSTRAP_RESAMPLES, level: float = LEVEL) -> dict[str, Any]:
    """Model A against model B on the same images, in the same order.

    Args:
        correct_a, correct_b: [n] booleans, whether each model's top-1 is right on image i.
        seed, resamples, level: the paired bootstrap of the difference (both models on the same draws).

    Returns:
        images; accuracy_a, accuracy_b; difference (A - B) and difference_ci95; a_only, b_only (the discordant
        images); p_value (McNemar's exact test).
    """
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    n = len(correct_a)
    delta = correct_a.astype(np.float64) - correct_b
    rng = np.random.default_rng(seed)
    # Resampled in chunks: memory stays at about 100 draws of the eval set, whatever its size.
    replicates = np.concatenate([delta[rng.integers(0, n, size=(min(100, resamples - start), n))].mean(axis=1)
                                 for start in range(0, resamples, 100)]) if n else np.zeros(1)
    a_only, b_only = int((correct_a & ~correct_b).sum()), int((correct_b & ~correct_a).sum())
    return {"images": n, "accuracy_a": float(correct_a.mean()) if n else 0.0,
            "accuracy_b": float(correct_b.mean()) if n else 0.0, "difference": float(delta.mean()) if n else 0.0,
            "difference_ci95": percentile_interval(replicates, level), "a_only": a_only, "b_only": b_only,
            "p_value": mcnemar_exact(a_only, b_only)}


def verdict(name_a: str, name_b: str, pair: dict[str, Any], significance: float = SIGNIFICANCE) -> str:
    """The answer to "is A better than B on this data?" in one sentence, with the p-value."""
    a_only, b_only, p = pair["a_only"], pair["b_only"], pair["p_value"]
    counts = (f"on the same {pair['images']} images {name_a} alone is right on {a_only}, {name_b} alone on {b_only} "
              f"(McNemar's exact p = {p:.3g})")
    if p < significance:
        better, worse = (name_a, name_b) if a_only > b_only else (name_b, name_a)
        return f"{better} is better than {worse} on this data: {counts}."
    return (f"Neither is shown better: {counts}; were both equally good, a split at least this uneven would happen "
            f"with probability {p:.2f}, above {significance:g}.")
