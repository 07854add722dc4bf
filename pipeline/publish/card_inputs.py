"""What the model card says, gathered from a finished run: `CardInputs` and `card_inputs` (plain values, no torch
objects; torch-backed helpers are imported only when a card is assembled). `publish.card` renders them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vit_pipeline.utils import plain

# Training arguments the card always lists, then the fine-tuning techniques it lists only when they are used.
TRAINING_HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
                            "gradient_accumulation_steps", "num_train_epochs", "max_steps", "weight_decay",
                            "lr_scheduler_type", "warmup_steps", "max_grad_norm", "label_smoothing_factor", "seed",
                            "bf16", "fp16")
MODEL_TECHNIQUES = ("image_size", "freeze_backbone", "use_peft", "lora_r", "lora_alpha")
TRAINING_TECHNIQUES = ("layer_decay", "backbone_learning_rate", "mixup_alpha", "cutmix_alpha", "class_weighted_loss",
                       "ema_decay", "early_stopping_patience", "activation_checkpointing")


@dataclass
class CardInputs:
    """Everything the card says, gathered by the command that trained (plain values, no torch objects)."""

    model_name: str
    model_source: str  # model_name_or_path as given
    from_scratch: bool
    architecture: str
    labels: list[str]
    eval_metrics: dict[str, float]  # without the eval_ prefix: accuracy, f1, ...
    eval_split: str
    train_samples: int | str  # a count, or a phrase for a stream ("4,096 streamed")
    eval_samples: int
    dataset_id: str | None  # Hub id, or None for local data
    dataset_display: str  # how the dataset is named in prose
    dataset_config: str | None = None
    license: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    epoch_results: list[dict[str, Any]] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)
    image_size: Any = None
    image_mean: Any = None
    image_std: Any = None
    augmentation: str = ""
    backend: str = "trainer"
    skipped_images: dict[str, int] = field(default_factory=dict)
    # Train/serve skew: images pipeline() reads otherwise than training, per split and kind, and the conversion that
    # fixes it (`vit_pipeline.data.check`).
    serve_skew: dict[str, dict[str, int]] = field(default_factory=dict)
    serve_fix: str | None = None
    hub_model_id: str | None = None
    tags: list[str] = field(default_factory=list)
    # Multi-label runs: images with no positive label per split, the per-class table (label, support, ap, f1,
    # threshold, f1_tuned, ...) and the tuned thresholds (`thresholds.json`).
    multi_label: bool = False
    no_positive: dict[str, int] = field(default_factory=dict)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    thresholds: dict[str, Any] | None = None
    # From `vit_pipeline.evaluation.run_report.report_training_run`: the eval report (either kind), per-class rows
    # and the file names of the figures written into the output folder (None for those not drawn).
    evaluation: dict[str, Any] | None = None
    # A distilled model: its teacher, with the teacher's own figures (`publish.teacher_card.teacher_summary`).
    teacher: dict[str, Any] | None = None
    # From `commands.train._summarize_data`: exact duplicates (sentences, eval images leaked from train), class
    # balance ({"counts": {split: {class: n}}, "imbalance_ratio", "missing"}) and excluded images per split.
    data_summary: dict[str, Any] | None = None
    # The test split (never used to choose anything): its name, size and the eval metrics' test values (what
    # `model-index` reports when there is one); and temperature scaling: T, ECE / NLL before and after, `measured_on`
    # (test, else eval). None when the run has no test split / is not calibrated.
    test_split: str | None = None
    test_samples: int | None = None
    test_metrics: dict[str, float] | None = None
    calibration: dict[str, Any] | None = None


def hyperparameters(model_args, training_args) -> dict[str, Any]:
    """The card's hyperparameters: the training arguments that change results, and the techniques that were used."""
    training = vars(training_args)
    values = {name: training[name] for name in TRAINING_HYPERPARAMETERS}
    values["optim"] = str(plain(training_args.optim))
    values["lr_scheduler_type"] = str(plain(training_args.lr_scheduler_type))
    values["num_processes"] = training_args.world_size
    for fields, names in ((vars(model_args), MODEL_TECHNIQUES), (training, TRAINING_TECHNIQUES)):
        for name in names:
            if fields[name] and (model_args.use_peft or not name.startswith("lora_")):
                values[name] = fields[name]
    values["total_train_batch_size"] = (training_args.per_device_train_batch_size
                                        * training_args.gradient_accumulation_steps * training_args.world_size)
    return values


def dataset_display(data_args, splits) -> str:
    """How the card names the dataset in prose: its Hub id, the embedded digits, or the local folder's name."""
    if splits.hub_id:
        return splits.hub_id
    if (data_args.dataset_name or "").startswith("builtin:"):
        return "scikit-learn's handwritten digits (embedded)"
    return f"a local dataset ({Path(data_args.dataset_name or data_args.train_dir).name})"


def augmentation(data_args) -> str:
    """The training augmentation in words: crop, flip, then the extra steps of `vit_pipeline.data.augment`."""
    from vit_pipeline.data.augment import describe  # torchvision: imported only when a card is assembled

    steps = []
    if data_args.random_resized_crop:
        steps.append(f"random resized crop (scale {data_args.crop_scale_min:g}-1)")
    if data_args.horizontal_flip:
        steps.append("horizontal flip")
    steps += describe(data_args)
    return ", ".join(steps) or "none"


def card_inputs(model_args, data_args, training_args, *, splits, result, recipe: dict[str, Any], architecture: str,
                image_processor, push_requested: bool, per_class: list[dict[str, Any]] | None = None,
                thresholds: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None,
                data_summary: dict[str, Any] | None = None, test: dict[str, Any] | None = None,
                calibration: dict[str, Any] | None = None) -> CardInputs:
    """Gather what the card says about a finished `train` run.

    Args:
        model_args, data_args, training_args: the run's parsed arguments.
        splits: the `vit_pipeline.data.splits.Splits` it trained and evaluated on.
        result: the backend's `TrainResult`: its `scores` (the final evaluation) and `log_history` (the per-epoch
            table).
        recipe: the resolved recipe (shown in the card).
        architecture: the model's class name.
        image_processor: the saved image processor (size, mean and std in the card).
        push_requested: whether the run pushes to `training_args.hub_model_id` (the card's usage snippet names it).
        per_class, thresholds: multi-label runs: the per-class table (`evaluation.multilabel.per_class_report`)
            and the tuned thresholds (`evaluation.multilabel.threshold_summary`).
        evaluation: what `evaluation.run_report.report_training_run` wrote (report, figures; a multi-label one too).
        data_summary: exact duplicates, class balance and excluded images (`commands.train._summarize_data`).
        test: what `evaluation.heldout.report_test_split` wrote (report, metrics), None without a test split.
        calibration: what `evaluation.heldout.record_calibration` recorded, None when not calibrated.
    """
    from vit_pipeline.data.transforms import image_spec  # torch: imported only when a card is assembled

    spec = image_spec(image_processor)
    return CardInputs(
        model_name=(training_args.hub_model_id or Path(training_args.output_dir).name),
        model_source=model_args.model_name_or_path,
        from_scratch=model_args.from_scratch,
        architecture=architecture,
        labels=splits.labels,
        eval_metrics=result.scores,
        eval_split=splits.eval_split_name,
        # A stream has no length: the card says how many training images the run read.
        train_samples=len(splits.train) if not data_args.streaming else (
            f"{result.global_step * hyperparameters(model_args, training_args)['total_train_batch_size']:,} streamed"),
        eval_samples=len(splits.eval),
        dataset_id=splits.hub_id,
        dataset_display=dataset_display(data_args, splits),
        dataset_config=splits.config_name,
        license=training_args.license,
        hyperparameters=hyperparameters(model_args, training_args),
        epoch_results=epoch_results(result.log_history),
        recipe=recipe,
        image_size=list(spec.output_size),
        image_mean=list(spec.mean),
        image_std=list(spec.std),
        augmentation=augmentation(data_args),
        backend=training_args.backend,
        skipped_images=splits.skipped_images,
        serve_skew=splits.serve_skew,
        serve_fix=serve_fix(splits.serve_skew),
        hub_model_id=training_args.hub_model_id if push_requested else None,
        multi_label=splits.multi_label,
        no_positive=splits.no_positive,
        per_class=per_class or [],
        thresholds=thresholds,
        evaluation=evaluation,
        teacher=_teacher(training_args),
        data_summary=data_summary,
        **test_inputs(splits, test),
        calibration=calibration,
    )


def test_inputs(splits, test: dict[str, Any] | None) -> dict[str, Any]:
    """The card's test split fields: name, size and metrics (all None without a test split)."""
    if test is None:
        return {"test_split": None, "test_samples": None, "test_metrics": None}
    return {"test_split": splits.test_split_name, "test_samples": int(test["report"]["num_samples"]),
            "test_metrics": test["metrics"]}


def serve_fix(serve_skew: dict[str, dict[str, int]]) -> str | None:
    """The conversion the card tells users to apply before `pipeline()` when some images read otherwise there."""
    if not serve_skew:
        return None
    from vit_pipeline.data.check import fix_snippet  # torch: imported only when a card is assembled

    return fix_snippet()


def _teacher(training_args) -> dict[str, Any] | None:
    if not training_args.teacher_model_name_or_path:
        return None
    from vit_pipeline.publish.teacher_card import teacher_summary

    summary = teacher_summary(training_args.teacher_model_name_or_path,
                              {"type": training_args.distillation_type, "alpha": training_args.distillation_alpha,
                               "temperature": training_args.distillation_temperature})
    if training_args.baseline:
        from vit_pipeline.publish.teacher_card import local_figures

        # The same student trained without the teacher (train.py's baseline/, trained before the card is written).
        summary["baseline"] = local_figures(Path(training_args.output_dir) / "baseline")
    return summary


def epoch_results(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn a Trainer-style log history into one row per evaluation: epoch, step, losses and metrics."""
    rows, last_train_loss = [], "n/a"
    for entry in log_history:
        if "loss" in entry:
            last_train_loss = f"{entry['loss']:.4f}"
        if "eval_loss" in entry:
            metrics = {k[len("eval_"):]: f"{v:.4f}" for k, v in entry.items()
                       if k.startswith("eval_") and isinstance(v, float) and k not in (
                           "eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")}
            epoch = entry.get("epoch")
            rows.append({
                "epoch": f"{epoch:.2f}" if isinstance(epoch, float) else epoch,
                "step": entry.get("step"),
                "train_loss": last_train_loss,
                "eval_loss": f"{entry['eval_loss']:.4f}",
                "metrics": metrics,
            })
    return rows
