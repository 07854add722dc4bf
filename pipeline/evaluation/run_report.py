"""What a finished training run adds to its output folder for the card: the evaluation report of the eval split (as
`vit-pipeline evaluate` writes it), the training curves, and explanation maps of eight eval images (attention rollout
for ViTs, Grad-CAM for the rest) with their faithfulness (`evaluation.explain.explain_run`).

Everything is measured on the saved model (reloaded from the output folder: what `pipeline()` and the Hub get), and
only figures that were drawn are named for the card.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CURVES_PNG = "training_curves.png"


def picture(item):
    """Any image cell (PIL image, encoded bytes, `{"bytes", "path"}`, file path, array) as an RGB PIL image."""
    from PIL import Image

    from vit_pipeline.data.decode import decode_rgb

    return Image.fromarray(decode_rgb(item).permute(1, 2, 0).numpy())


def evaluate_dataset(model, image_processor, dataset, dataset_labels: list[str], out_dir, *, model_name: str,
                     dataset_name: str, split: str, seed: int = 0, batch_size: int = 32, progress: bool = False,
                     revision: str = "main", thresholds_from: str | Path | None = None,
                     save_tuned_thresholds: bool = True, error_grid: bool = True,
                     train_overlap: int | None = None) -> dict[str, Any]:
    """Predict over `dataset` (canonical image/label columns), build the report and write it into `out_dir`.

    Dataset labels are matched by name to the model's `id2label` (an unknown one raises `PipelineError`, named).
    Returns the report dict. A multi-label model (`config.problem_type`) gets the multi-label report
    (`evaluation.multilabel`): map, F1s, per-class AP, precision-recall curves, the thresholds saved with the model
    (`thresholds.json` of `model_name` at `revision`, or of the folder `thresholds_from`) applied, and thresholds
    tuned on this split (written as `out_dir/thresholds.json` unless `save_tuned_thresholds` is false: a training run
    keeps the ones it tuned). `error_grid`: also draw the grid of the most confident errors (the slowest figure).
    `train_overlap`: how many of these images the model trained on (`evaluate --allow_train_overlap`): the report
    carries it as `train_overlap`, and its Markdown a warning.
    """
    overlap = {} if train_overlap is None else {"train_overlap": int(train_overlap)}
    import numpy as np

    from vit_pipeline.evaluation.inference import image_ids, match_labels, model_labels, predict_logits
    from vit_pipeline.evaluation.report import build_report, prediction_rows, write_report
    from vit_pipeline.model.inspect import is_multi_label

    to_model = np.asarray(match_labels(dataset_labels, model))
    logits, labels = predict_logits(model, dataset, image_processor, batch_size=batch_size, progress=progress)
    names = model_labels(model)
    if is_multi_label(model):
        from vit_pipeline.evaluation.multilabel import saved_thresholds, sigmoid
        from vit_pipeline.evaluation.multilabel_report import build_multilabel_report, write_multilabel_report

        # Dataset classes in the model's order (a single-label set counts one positive per image).
        multi_hot = np.zeros((len(labels), len(names)), dtype=np.int64)
        if labels.ndim == 1:
            multi_hot[np.arange(len(labels)), to_model[labels]] = 1
        else:
            multi_hot[:, to_model] = labels
        report = build_multilabel_report(logits, multi_hot, names, model=model_name, dataset=dataset_name,
                                         split=split, saved=saved_thresholds(str(thresholds_from or model_name),
                                                                             names, revision=revision))
        report.update(overlap)
        ids, id_column = image_ids(dataset)
        write_multilabel_report(report, out_dir, sigmoid(logits), multi_hot, ids, id_column,
                                save_thresholds=save_tuned_thresholds)
        return report
    from vit_pipeline.evaluation.calibration import model_temperature

    labels = to_model[labels]
    report = build_report(logits, labels, names, model=model_name, dataset=dataset_name, split=split, seed=seed,
                          temperature=model_temperature(model)) | overlap
    ids, id_column = image_ids(dataset)
    write_report(report, out_dir, predictions=prediction_rows(logits, labels, names, ids),
                 images=(lambda i: picture(dataset[int(i)]["image"])) if error_grid else None, id_column=id_column)
    return report


def _explained_rows(dataset, count: int) -> list[int]:
    """Up to `count` eval rows, one per class first (so the maps show different classes), in row order."""
    labels = dataset.select_columns(["label"]).with_format(None)["label"][:]
    rows, seen = [], set()
    for i, label in enumerate(labels):
        label = tuple(label) if isinstance(label, list) else label  # a multi-label row: its set of labels
        if label not in seen:
            rows.append(i)
            seen.add(label)
        if len(rows) == count:
            return rows
    rest = [i for i in range(len(labels)) if i not in rows]
    return rows + rest[: count - len(rows)]


def _true_names(label, dataset_labels: list[str]) -> str:
    """A row's true label as the explanation caption names it: one class, or a multi-hot row's classes ("none")."""
    if isinstance(label, list):
        return "+".join(name for name, flag in zip(dataset_labels, label, strict=True) if flag > 0.5) or "none"
    return dataset_labels[label]


def report_training_run(output_dir: str | Path, eval_dataset, dataset_labels: list[str], log_history: list[dict],
                        *, metric: str | None, dataset_name: str, split: str, seed: int = 0,
                        batch_size: int = 32, multi_label: bool = False) -> dict[str, Any]:
    """Write the eval report, training curves and explanation maps of a training run into `output_dir`.

    Args:
        output_dir: the run's output folder (holding the saved model and image processor).
        eval_dataset: the eval split, canonical `image` / `label` columns (as `load_splits` gives it).
        dataset_labels: the dataset's class names, in its label-id order.
        log_history: the Trainer-style log history of the run.
        metric: the best-model metric (plotted per epoch beside the losses).
        dataset_name, split: how the report names the data.
        multi_label: a multi-label run: the multi-label report (`evaluation.multilabel`: map, per-class AP, PR
            curves), scored at the thresholds the run saved in `output_dir/thresholds.json`, which it keeps.

    Returns:
        What the card shows: `report` (the report dict), `per_class_top` / `per_class_bottom` rows (single-label;
        a multi-label card has its own per-class table), and the file names of the figures that were written
        (`confusion_matrix`, `pr_curves`, `training_curves`; None when not), and the explanation's
        (`explanation`, `explanation_method`, `faithfulness`, `explanation_note`: see `explain.explain_run`).
    """
    from vit_pipeline.evaluation.inference import load_trained
    from vit_pipeline.evaluation.multilabel_report import PR_CURVES_PNG
    from vit_pipeline.evaluation.plots import plot_training_curves
    from vit_pipeline.evaluation.report import CONFUSION_PNG, class_table

    out = Path(output_dir)
    curves = plot_training_curves(log_history, metric, out / CURVES_PNG)
    model, image_processor = load_trained(str(out))
    # The evaluate command's report (either kind); a multi-label run keeps the thresholds.json it tuned.
    report = evaluate_dataset(model, image_processor, eval_dataset, dataset_labels, out,
                              model_name=out.name, dataset_name=dataset_name, split=split, seed=seed,
                              batch_size=batch_size, thresholds_from=out, save_tuned_thresholds=not multi_label)
    top, bottom = ([], []) if multi_label else class_table(report)
    # Where the model looks, for every family (rollout for ViTs, Grad-CAM for the rest), and how faithful that is.
    from vit_pipeline.evaluation.explain import RUN_IMAGES, explain_run

    rows = _explained_rows(eval_dataset, RUN_IMAGES)
    shown = "top" if multi_label else "predicted"
    explanation = explain_run(model, image_processor, eval_dataset, rows,
                              [f"true {_true_names(eval_dataset[i]['label'], dataset_labels)}, {shown}" for i in rows],
                              out, model_name=out.name)
    return {"report": report, "per_class_top": top, "per_class_bottom": bottom,
            "confusion_matrix": None if multi_label else CONFUSION_PNG,
            "pr_curves": PR_CURVES_PNG if multi_label else None,
            "training_curves": curves.name if curves else None, **explanation}
