"""The test split of a training run: scored once, on the saved (merged, calibrated) model, after everything was
chosen on the eval split (best checkpoint, early stopping, multi-label thresholds, the calibration temperature).

Writes the report as `vit-pipeline evaluate` writes it into `OUTPUT_DIR/test/` (`test_report.json` /
`test_report.md`, `predictions.csv`, the confusion matrix and reliability diagram; not the grid of errors, the
slowest figure, which `vit-pipeline evaluate RUN --eval_split test` draws), the scores as `test_results.json` (merged
into `all_results.json` with a `test_` prefix, as the Trainer writes `eval_results.json`), and what calibration did
on held-out images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vit_pipeline.utils import merge_json, save_metrics

logger = logging.getLogger(__name__)

TEST_DIR = "test"
TEST_REPORT_JSON = "test_report.json"
TEST_REPORT_MD = "test_report.md"


def report_test_split(output_dir: str | Path, test_dataset, dataset_labels: list[str], *, metric_names: list[str],
                      dataset_name: str, split: str, seed: int = 0, batch_size: int = 32) -> dict[str, Any]:
    """Evaluate the saved model of `output_dir` on its test split and write the report, `test_results.json` and
    `all_results.json`'s test entries.

    Args:
        output_dir: the run's output folder.
        test_dataset: the test split (canonical `image` / `label` columns).
        dataset_labels: the dataset's class names, in its label-id order.
        metric_names: the eval metrics the run reports (accuracy, f1, ... or map, ...): the test split reports the
            same ones (the card's `model-index`).
        dataset_name, split: how the report names the data.
        seed: seeds the report's bootstrap.
        batch_size: images per forward pass.

    Returns:
        `report` (the report dict) and `metrics` (the run's metric names with their test values).
    """
    from vit_pipeline.evaluation.inference import load_trained
    from vit_pipeline.evaluation.report import REPORT_JSON, REPORT_MD
    from vit_pipeline.evaluation.run_report import evaluate_dataset

    out = Path(output_dir)
    folder = out / TEST_DIR
    model, image_processor = load_trained(str(out))
    # A multi-label model is scored at the thresholds the run tuned on its eval split (and keeps them).
    report = evaluate_dataset(model, image_processor, test_dataset, dataset_labels, folder, model_name=out.name,
                              dataset_name=dataset_name, split=split, seed=seed, batch_size=batch_size,
                              thresholds_from=out, save_tuned_thresholds=False, error_grid=False)
    (folder / REPORT_JSON).replace(folder / TEST_REPORT_JSON)
    (folder / REPORT_MD).replace(folder / TEST_REPORT_MD)
    metrics = {name: float(report[name]) for name in metric_names if isinstance(report.get(name), (int, float))}
    save_metrics(out, "test", {f"test_{name}": value for name, value in metrics.items()}
                 | {"test_samples": int(report["num_samples"])})
    logger.info("Test split (%s, %d images, never used to choose): %s", split, report["num_samples"],
                ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    return {"report": report, "metrics": metrics}


def record_calibration(output_dir: str | Path, report: dict[str, Any], split: str) -> dict[str, Any] | None:
    """Put what temperature scaling did on `report`'s images (the test split's when there is one) into
    `all_results.json`; returns it for the card (None when the model is not calibrated)."""
    calibration = report.get("calibration")
    if not calibration:
        return None
    shown = {key: value for key, value in calibration.items() if key != "bins_before"}
    merge_json(Path(output_dir) / "all_results.json",
               {"calibration_temperature": shown["temperature"], "calibration_measured_on": split,
                **{f"calibration_{key}": value for key, value in shown.items() if key != "temperature"}})
    return {**shown, "measured_on": split}
