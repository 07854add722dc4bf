"""Uncertainty across run folders: `compare`'s intervals and pairwise McNemar tests, and `search`'s check that its
best trial is clearly better than the next.

Everything is read from what a training run writes (`eval_report.json` and `predictions.csv` of its eval split), so a
comparison or a study resumed from finished folders gets the same figures without evaluating again.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from vit_pipeline.evaluation.report import PREDICTIONS_CSV, REPORT_JSON
from vit_pipeline.evaluation.uncertainty import SIGNIFICANCE, paired_comparison, verdict

PAIRS_CSV = "comparison_pairs.csv"
PAIR_COLUMNS = ("model_a", "model_b", "images", "accuracy_a", "accuracy_b", "difference", "difference_ci95_low",
                "difference_ci95_high", "a_only_right", "b_only_right", "p_value", "verdict")


def read_report(folder: str | Path) -> dict[str, Any] | None:
    """The `eval_report.json` a run wrote for its eval split, or None when it has none."""
    path = Path(folder) / REPORT_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def metric_interval(folder: str | Path, metric: str) -> list[float] | None:
    """The 95% bootstrap interval of `metric` (accuracy or f1, the macro F1) in a run's eval report; None when the
    run has no report or the metric has no interval (loss, precision, a multi-label metric)."""
    report = read_report(folder) or {}
    return report.get(f"{metric.removeprefix('eval_')}_ci95")


def read_outcomes(folder: str | Path) -> tuple[list[tuple[str, str]], np.ndarray] | None:
    """Each eval image's (id, true label) and whether the run's top-1 was right, from its single-label
    predictions.csv; None for a run without one (a multi-label run writes label sets instead)."""
    path = Path(folder) / PREDICTIONS_CSV
    if not path.is_file():
        return None
    with path.open(newline="") as file:
        reader = csv.reader(file)
        header = next(reader, [])
        if header[1:3] != ["true_label", "predicted_label"]:
            return None
        rows = list(reader)
    return [(r[0], r[1]) for r in rows], np.array([r[1] == r[2] for r in rows], dtype=bool)


def compare_on_same_images(rows: list[dict[str, Any]], output: str | Path, seed: int = 0) -> list[dict[str, Any]]:
    """Add each model's accuracy interval to its row, and test every pair of models on their shared eval images.

    Args:
        rows: compare's rows (`model`, `folder` under `output`); `accuracy_ci95_low` / `_high` are added (None for
            a run without an interval).
        output: the comparison folder.
        seed: seeds the paired bootstrap of each difference.

    Returns:
        One dict per pair (`PAIR_COLUMNS`, from `uncertainty.paired_comparison`), A before B in the rows' order. A
        pair whose runs were not scored on the same images, or have no single-label predictions, gets only its
        names and a verdict that says why.
    """
    outcomes = {}
    for row in rows:
        interval = metric_interval(Path(output) / row["folder"], "accuracy") or [None, None]
        row["accuracy_ci95_low"], row["accuracy_ci95_high"] = interval
        outcomes[row["folder"]] = read_outcomes(Path(output) / row["folder"])
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            pair: dict[str, Any] = {"model_a": a["folder"], "model_b": b["folder"]}
            first, second = outcomes[a["folder"]], outcomes[b["folder"]]
            if first is None or second is None:
                pair["verdict"] = "Not tested: a run has no single-label predictions.csv (multi-label, or no report)."
            elif first[0] != second[0]:
                pair["verdict"] = ("Not tested: the two runs were scored on different eval images (other data, "
                                   "split or seed).")
            else:
                result = paired_comparison(first[1], second[1], seed=seed)
                pair.update({k: result[k] for k in ("images", "accuracy_a", "accuracy_b", "difference", "p_value")})
                pair["difference_ci95_low"], pair["difference_ci95_high"] = result["difference_ci95"]
                pair["a_only_right"], pair["b_only_right"] = result["a_only"], result["b_only"]
                pair["verdict"] = verdict(f"`{a['folder']}`", f"`{b['folder']}`", result)
            pairs.append(pair)
    return pairs


def interval_cell(row: dict[str, Any]) -> str:
    """comparison.md's cell for a model's accuracy interval: `low-high`, or `-` when its run has none."""
    low, high = row.get("accuracy_ci95_low"), row.get("accuracy_ci95_high")
    return "-" if low is None or high is None else f"{low:.4f}-{high:.4f}"


def write_pairs_csv(pairs: list[dict[str, Any]], path: str | Path) -> Path:
    """One row per pair of models (`PAIR_COLUMNS`); empty cells for an untested pair."""
    path = Path(path)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=PAIR_COLUMNS)
        writer.writeheader()
        for pair in pairs:
            writer.writerow({k: "" if pair.get(k) is None else str(pair[k]).replace("`", "") for k in PAIR_COLUMNS})
    return path


def pairs_markdown(pairs: list[dict[str, Any]]) -> list[str]:
    """comparison.md's section on the pairs: the table, then the answer to "is A better than B?" for each pair."""
    if not pairs:
        return []
    lines = ["", "## Is one model better than another on this data?", "",
             "Accuracy's 95% CI above: the percentile bootstrap of each run's eval_report.json (1,000 resamples of its "
             "eval images). Each pair on the same eval images: the difference in accuracy (A - B) with its paired 95% "
             "bootstrap interval, the images only one of the two gets right, and McNemar's exact test on those (the "
             f"two-sided binomial test at 1/2). Below p = {SIGNIFICANCE:g} the difference is called real; with many "
             "pairs, some fall below it by chance (the p-values are not corrected for the number of pairs).", "",
             "| A | B | images | difference (95% CI) | only A right | only B right | p-value |",
             "|---|---|---|---|---|---|---|"]
    for p in pairs:
        if "p_value" not in p:
            lines.append(f"| `{p['model_a']}` | `{p['model_b']}` | - | - | - | - | - |")
            continue
        lines.append(f"| `{p['model_a']}` | `{p['model_b']}` | {p['images']} | {p['difference']:+.4f} "
                     f"({p['difference_ci95_low']:+.4f} to {p['difference_ci95_high']:+.4f}) | {p['a_only_right']} | "
                     f"{p['b_only_right']} | {p['p_value']:.3g} |")
    lines.append("")
    lines += [f"- `{p['model_a']}` against `{p['model_b']}`: {p['verdict']}" for p in pairs]
    return lines


def best_trial_mark(trials: list[tuple[int, float, str]], metric: str, maximize: bool) -> tuple[int, str] | None:
    """Whether the best finished trial is clearly better than the next best: its value outside the next best's 95%
    bootstrap interval (`metric_interval` of that trial's folder).

    Args:
        trials: (number, value, output folder) of every finished trial.
        metric: the study's metric (an interval exists for accuracy and f1).
        maximize: whether higher is better.

    Returns:
        (best trial number, a note: "clearly better than trial N ...", "within the 95% interval of trial N ...",
        "no interval ..." or "the only finished trial"), or None when no trial finished.
    """
    if len(trials) < 2:
        return (trials[0][0], "the only finished trial") if trials else None
    ranked = sorted(trials, key=lambda t: -t[1] if maximize else t[1])
    (best, value, _), (runner_up, second, folder) = ranked[0], ranked[1]
    interval = metric_interval(folder, metric)
    if interval is None:
        return best, (f"no interval for eval {metric} (only accuracy and f1 have one): not compared with trial "
                      f"{runner_up}")
    low, high = interval
    if low <= value <= high:
        return best, (f"within the 95% interval of trial {runner_up} ({second:.4f}, {low:.4f}-{high:.4f}): not "
                      "clearly better")
    return best, f"clearly better than trial {runner_up} ({second:.4f}, 95% interval {low:.4f}-{high:.4f})"
