"""The audit's class balance and the lines it prints: what it found, and its timing (the embedding pass against
everything else: the audit's cost beyond the embedding pass is meant to stay within 10% of it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vit_pipeline.evaluation.audit.checks import AuditData

# A class is starved when its train images are under this share of the median class's.
STARVED_SHARE = 0.2


def class_balance_of(data: AuditData) -> tuple[dict, list[str]]:
    """Counts per class and split, imbalance ratios, missing classes (`data.balance.class_balance`), and the starved
    classes of train."""
    from vit_pipeline.data.balance import class_balance

    per_split = {str(split): data.labels[data.splits == split] for split in dict.fromkeys(data.splits)}
    balance = class_balance(data.label_names, per_split)
    train = balance["counts"]["train"]
    median = float(np.median(list(train.values())))
    return balance, [name for name, n in train.items() if n < STARVED_SHARE * median]


def print_summary(report: dict[str, Any], timing: dict[str, float], out: Path) -> None:
    """Print what the audit found, one line per kind, then its timing lines."""
    leaked = report["leakage"]["splits"]
    image = ", ".join(f"{kind} {len(rows)}" for kind, rows in report["image_issues"].items() if rows) or "none"
    print(f"{len(report['label_issues'])} label issue(s); "
          f"{sum(d['kind'] == 'exact' for d in report['duplicates'])} exact and "
          f"{sum(d['kind'] == 'near' for d in report['duplicates'])} near duplicate group(s); "
          f"{len(report['outliers'])} outlier(s); image issues: {image}")
    for split, entry in leaked.items():
        print(f"leakage: {entry['exact']} exact and {entry['near']} near copies of train images in {split}")
    accuracy = report["leakage"]["model_accuracy"]
    if accuracy and leaked:
        print(f"model accuracy on eval {accuracy['accuracy']:.4f}; without the leaked images "
              f"{accuracy['accuracy_without_leaked']}")
    embedding = timing["embedding"]
    rest = sum(v for k, v in timing.items() if k not in ("embedding", "load_and_check"))
    images = sum(report["num_images"].values())
    print(f"timing: embedding pass {embedding:.2f} s ({images / max(embedding, 1e-9):.0f} images/s); the rest "
          f"{rest:.2f} s ({rest / max(embedding, 1e-9):.0%} of it: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in timing.items() if k not in ("embedding", "load_and_check"))
          + f"); loading and the image check {timing['load_and_check']:.2f} s")
    print(f"report in {out} (audit_report.md, issues.csv; exclude.txt for exclude_images)")
