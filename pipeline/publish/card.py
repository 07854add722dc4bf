"""Render the model card (README.md) from a template in `model_cards/` with huggingface_hub's ModelCard.

The metadata block is built by `ModelCardData`, never by string concatenation: the evaluation results become a
`model-index` that the Hub (and `huggingface_hub.metadata_load`) parse back. What the card says is gathered by
`publish.card_inputs`. No torch here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from vit_pipeline.publish.card_inputs import CardInputs
from vit_pipeline.utils import is_hub_id

TEMPLATE = "image_classification.md"
CARD_FILE = "README.md"
FRAMEWORKS = ("vit-pipeline", "transformers", "torch", "torchvision", "datasets", "accelerate", "evaluate",
              "huggingface-hub")


def template_path(name: str = TEMPLATE) -> Path:
    """Path of a card template: `model_cards/` beside the package (a checkout), else the installed copy."""
    repo_copy = Path(__file__).resolve().parents[2] / "model_cards" / name
    if repo_copy.exists():
        return repo_copy
    with importlib.resources.as_file(importlib.resources.files("vit_pipeline.model_cards") / name) as path:
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
    """One `EvalResult` per metric, for the card's `model-index`: on the test split when the run has one (the eval
    split chose the checkpoint, so its figures are optimistic), else on the eval split."""
    dataset_type = inputs.dataset_id or inputs.dataset_display
    split, metrics = reported_split(inputs)
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_type,
            dataset_name=inputs.dataset_display,
            dataset_config=inputs.dataset_config,
            dataset_split=split,
            metric_type=name,
            metric_name=name.replace("_", " ").capitalize(),
            metric_value=round(float(value), 6),
            # Averages: say which, so they are not read as binary scores.
            metric_args=_metric_args(name),
        )
        for name, value in metrics.items()
    ]


def reported_split(inputs: CardInputs) -> tuple[str, dict[str, float]]:
    """The split `model-index` reports and its metrics: the test split (named `test: ...` when held out of train)
    when there is one, else the eval split."""
    if inputs.test_metrics:
        name = inputs.test_split if inputs.test_split == "test" else f"test: {inputs.test_split}"
        return name, inputs.test_metrics
    return inputs.eval_split, inputs.eval_metrics


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
              *(["knowledge-distillation"] if inputs.teacher else []),
              *inputs.tags],
        metrics=list(inputs.eval_metrics),
        eval_results=eval_results(inputs),
    )
    model_source_url = f"https://huggingface.co/{inputs.model_source}" if base_model else inputs.model_source
    # Every input under its own name, and what the template derives from them.
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        **vars(inputs),
        model_source_url=model_source_url,
        usage_id=inputs.hub_model_id or "path/to/output_dir",
        recipe_yaml=yaml.safe_dump(inputs.recipe, sort_keys=False).strip(),
        framework_versions=framework_versions(),
        project_url=project_url(),
    )


def write_card(inputs: CardInputs, output_dir: str | Path) -> Path:
    """Render the card and save it as `README.md` in `output_dir`."""
    path = Path(output_dir) / CARD_FILE
    render_card(inputs).save(path)
    return path
