"""Render the model card (README.md) from a template in `model_cards/` with huggingface_hub's ModelCard.

The metadata block is built by `ModelCardData`, never by string concatenation: the evaluation results become a
`model-index` that the Hub (and `huggingface_hub.metadata_load`) parse back. No torch here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from pipeline.utils import is_hub_id, plain

TEMPLATE = "image_classification.md"
CARD_FILE = "README.md"
FRAMEWORKS = ("vit-pipeline", "transformers", "torch", "torchvision", "datasets", "accelerate", "evaluate",
              "huggingface-hub")
# Card keys for the hyperparameters section, in the order a reader scans them.
HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
                   "gradient_accumulation_steps", "total_train_batch_size", "num_train_epochs", "max_steps",
                   "optim", "weight_decay", "lr_scheduler_type", "warmup_steps", "max_grad_norm",
                   "label_smoothing_factor", "seed", "bf16", "fp16", "num_processes")
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
    hub_model_id: str | None = None
    tags: list[str] = field(default_factory=list)
    # Multi-label runs: images with no positive label per split, the per-class table (label, support, ap, f1,
    # threshold, f1_tuned, ...) and the tuned thresholds (`thresholds.json`).
    multi_label: bool = False
    no_positive: dict[str, int] = field(default_factory=dict)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    thresholds: dict[str, Any] | None = None
    # From `pipeline.evaluation.run_report.report_training_run`: the eval report (either kind), per-class rows
    # and the file names of the figures written into the output folder (None for those not drawn).
    evaluation: dict[str, Any] | None = None


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
    """The training augmentation in words: crop, flip, then the extra steps of `pipeline.data.augment`."""
    from pipeline.data.augment import describe  # torchvision: imported only when a card is assembled

    steps = []
    if data_args.random_resized_crop:
        steps.append(f"random resized crop (scale {data_args.crop_scale_min:g}-1)")
    if data_args.horizontal_flip:
        steps.append("horizontal flip")
    steps += describe(data_args)
    return ", ".join(steps) or "none"


def card_inputs(model_args, data_args, training_args, *, splits, result, recipe: dict[str, Any], architecture: str,
                image_processor, push_requested: bool, per_class: list[dict[str, Any]] | None = None,
                thresholds: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None) -> CardInputs:
    """Gather what the card says about a finished `train` run.

    Args:
        model_args, data_args, training_args: the run's parsed arguments.
        splits: the `pipeline.data.splits.Splits` it trained and evaluated on.
        result: the backend's `TrainResult`: its `scores` (the final evaluation) and `log_history` (the per-epoch
            table).
        recipe: the resolved recipe (shown in the card).
        architecture: the model's class name.
        image_processor: the saved image processor (size, mean and std in the card).
        push_requested: whether the run pushes to `training_args.hub_model_id` (the card's usage snippet names it).
        per_class, thresholds: multi-label runs: the per-class table (`evaluation.multilabel.per_class_report`)
            and the tuned thresholds (`evaluation.multilabel.threshold_summary`).
        evaluation: what `evaluation.run_report.report_training_run` wrote (report, figures; a multi-label one too).
    """
    from pipeline.data.transforms import image_spec  # torch: imported only when a card is assembled

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
        hub_model_id=training_args.hub_model_id if push_requested else None,
        multi_label=splits.multi_label,
        no_positive=splits.no_positive,
        per_class=per_class or [],
        thresholds=thresholds,
        evaluation=evaluation,
    )


def template_path(name: str = TEMPLATE) -> Path:
    """Path of a card template: `model_cards/` beside the package (a checkout), else the installed copy."""
    repo_copy = Path(__file__).resolve().parents[2] / "model_cards" / name
    if repo_copy.exists():
        return repo_copy
    with importlib.resources.as_file(importlib.resources.files("pipeline.model_cards") / name) as path:
        return Path(path)


def project_url(metadata=None) -> str | None:
    """The project's home on the web, from the installed package's metadata (`[project.urls]` in pyproject.toml):
    its Repository / Source / Homepage entry, else the first one. None when the package declares none (the card then
    names vit-pipeline without a link, never a dead one).

    Args:
        metadata: the package metadata to read (default: the installed vit-pipeline's, if installed).
    """
    if metadata is None:
        try:
            metadata = importlib.metadata.metadata("vit-pipeline")
        except importlib.metadata.PackageNotFoundError:
            return None
    urls = {}
    for entry in metadata.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if url.strip().startswith(("https://", "http://")):
            urls[label.strip().lower()] = url.strip()
    for label in ("repository", "source", "homepage"):
        if label in urls:
            return urls[label]
    return next(iter(urls.values()), None)


def framework_versions() -> dict[str, str]:
    """Installed versions of the libraries the run depends on."""
    versions = {}
    for name in FRAMEWORKS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def eval_results(inputs: CardInputs) -> list[EvalResult]:
    """One `EvalResult` per metric, for the card's `model-index`."""
    dataset_type = inputs.dataset_id or inputs.dataset_display
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_type,
            dataset_name=inputs.dataset_display,
            dataset_config=inputs.dataset_config,
            dataset_split=inputs.eval_split,
            metric_type=name,
            metric_name=name.replace("_", " ").capitalize(),
            metric_value=round(float(value), 6),
            # Averages: say which, so they are not read as binary scores.
            metric_args=_metric_args(name),
        )
        for name, value in inputs.eval_metrics.items()
    ]


def _metric_args(name: str) -> dict | None:
    if name in ("f1", "precision", "recall", "f1_macro"):
        return {"average": "macro"}
    if name in ("f1_micro", "map_micro"):
        return {"average": "micro"}
    if name in ("map", "auroc"):
        return {"average": "macro over classes with a positive"}
    return None


def render_card(inputs: CardInputs) -> ModelCard:
    """Render the model card for a finished run.

    Returns:
        A `huggingface_hub.ModelCard` whose metadata holds base_model, datasets, license, tags, pipeline_tag and
        the evaluation results as `model-index`.
    """
    base_model = None if inputs.from_scratch or not is_hub_id(inputs.model_source) else inputs.model_source
    card_data = ModelCardData(
        model_name=inputs.model_name,
        base_model=base_model,
        datasets=[inputs.dataset_id] if inputs.dataset_id else None,
        license=inputs.license,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["image-classification", "vision", "vit-pipeline", *(["multi-label"] if inputs.multi_label else []),
              *inputs.tags],
        metrics=list(inputs.eval_metrics),
        eval_results=eval_results(inputs),
    )
    model_source_url = f"https://huggingface.co/{inputs.model_source}" if base_model else inputs.model_source
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        model_name=inputs.model_name,
        from_scratch=inputs.from_scratch,
        architecture=inputs.architecture,
        model_source=inputs.model_source,
        model_source_url=model_source_url,
        dataset_display=inputs.dataset_display,
        eval_split=inputs.eval_split,
        eval_samples=inputs.eval_samples,
        train_samples=inputs.train_samples,
        eval_metrics=inputs.eval_metrics,
        usage_id=inputs.hub_model_id or "path/to/output_dir",
        hub_model_id=inputs.hub_model_id,
        labels=inputs.labels,
        skipped_images=inputs.skipped_images,
        backend=inputs.backend,
        image_size=inputs.image_size,
        image_mean=inputs.image_mean,
        image_std=inputs.image_std,
        augmentation=inputs.augmentation,
        hyperparameters=inputs.hyperparameters,
        epoch_results=inputs.epoch_results,
        recipe_yaml=yaml.safe_dump(inputs.recipe, sort_keys=False).strip(),
        framework_versions=framework_versions(),
        project_url=project_url(),
        multi_label=inputs.multi_label,
        no_positive=inputs.no_positive,
        per_class=inputs.per_class,
        thresholds=inputs.thresholds,
        evaluation=inputs.evaluation,
    )


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


def write_card(inputs: CardInputs, output_dir: str | Path) -> Path:
    """Render the card and save it as `README.md` in `output_dir`."""
    path = Path(output_dir) / CARD_FILE
    render_card(inputs).save(path)
    return path
