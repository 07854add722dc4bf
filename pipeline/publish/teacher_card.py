"""What the card of a distilled model says about its teacher: the teacher's own figures, beside the student's.

A local teacher (an output folder of `vit-pipeline train`) is read from its `all_results.json` (the final evaluation
on its own eval split) and `config.json`; a Hub teacher from its model card's `model-index`. No torch at import.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Evaluation entries that are not scores.
NOT_SCORES = ("loss", "runtime", "samples_per_second", "steps_per_second", "epoch")


def local_figures(folder: Path) -> dict[str, float]:
    """The `eval_` scores of a finished run's `all_results.json` (prefix dropped), or {} when there is none."""
    path = folder / "all_results.json"
    if not path.is_file():
        return {}
    results = json.loads(path.read_text())
    return {key[len("eval_"):]: float(value) for key, value in results.items()
            if key.startswith("eval_") and key[len("eval_"):] not in NOT_SCORES and isinstance(value, (int, float))}


def hub_figures(repo_id: str, token: str | None = None) -> tuple[dict[str, float], str | None]:
    """The first result of a Hub model card's `model-index` ({metric type: value}, and its dataset), or ({}, None)
    when the card cannot be read or reports nothing."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(repo_id, token=token)
    except Exception as err:  # offline, no card, a private repo without a token: the card names the teacher anyway
        logger.info("The teacher's model card could not be read (%s): its figures are left out", type(err).__name__)
        return {}, None
    results = card.data.eval_results or []
    if not results:
        return {}, None
    dataset = results[0].dataset_name or results[0].dataset_type
    return {r.metric_type: float(r.metric_value) for r in results if isinstance(r.metric_value, (int, float))}, dataset


def teacher_summary(name: str, distillation: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """What the card says about the teacher: its name and link, class, figures and where they come from, and how
    it taught (type, alpha, temperature).

    Args:
        name: `teacher_model_name_or_path` as given.
        distillation: {"type", "alpha", "temperature"} of the run.
    """
    local = Path(name)
    summary: dict[str, Any] = {"name": name, "distillation": distillation, "architecture": None, "figures": {},
                               "source": None, "url": None}
    if local.is_dir():
        config = json.loads((local / "config.json").read_text()) if (local / "config.json").is_file() else {}
        summary["architecture"] = (config.get("architectures") or [None])[0]
        summary["figures"] = local_figures(local)
        summary["source"] = "its all_results.json (its own eval split)" if summary["figures"] else None
        recipe = local / "recipe.yaml"
        if recipe.is_file():
            import yaml

            data = yaml.safe_load(recipe.read_text()) or {}
            summary["trained_on"] = data.get("dataset_name") or data.get("train_dir")
    else:
        figures, dataset = hub_figures(name, token)
        summary["url"] = f"https://huggingface.co/{name}"
        summary["figures"] = figures
        summary["source"] = f"its model card ({dataset})" if figures and dataset else (
            "its model card" if figures else None)
    return summary
