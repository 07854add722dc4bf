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

TEMPLATE = "image_classification.md"
CARD_FILE = "README.md"
FRAMEWORKS = ("vit-pipeline", "transformers", "torch", "torchvision", "datasets", "accelerate", "evaluate",
              "huggingface-hub")
# Card keys for the hyperparameters section, in the order a reader scans them.
HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
                   "gradient_accumulation_steps", "total_train_batch_size", "num_train_epochs", "max_steps",
                   "optim", "weight_decay", "lr_scheduler_type", "warmup_steps", "max_grad_norm",
                   "label_smoothing_factor", "seed", "bf16", "fp16", "num_processes")


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
    train_samples: int
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


def template_path(name: str = TEMPLATE) -> Path:
    """Path of a card template: `model_cards/` beside the package (a checkout), else the installed copy."""
    repo_copy = Path(__file__).resolve().parent.parent / "model_cards" / name
    if repo_copy.exists():
        return repo_copy
    with importlib.resources.as_file(importlib.resources.files("pipeline.model_cards") / name) as path:
        return Path(path)


def is_hub_id(name: str | None) -> bool:
    """True for `org/name` or `name` strings that are not local paths (what card metadata may link to)."""
    if not name or Path(name).exists() or name.startswith((".", "/", "~")) or ":" in name:
        return False
    return name.count("/") <= 1


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
            # Macro averages: say so, so they are not read as binary scores.
            metric_args={"average": "macro"} if name in ("f1", "precision", "recall") else None,
        )
        for name, value in inputs.eval_metrics.items()
    ]


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
        tags=["image-classification", "vision", "vit-pipeline", *inputs.tags],
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
