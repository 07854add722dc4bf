"""The resolved recipe: the run as it ran (recipe + flags, token never included), written as `recipe.yaml`."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import yaml

from vit_pipeline.config.arguments import RECIPE_FILE
from vit_pipeline.config.training_args import PipelineTrainingArguments
from vit_pipeline.utils import plain

# Never written to disk, logs or cards.
SECRET_FIELDS = {"hub_token"}
# Written to the resolved recipe even at their defaults: they are what a reader looks for first.
ALWAYS_SAVED = (
    "output_dir",
    "seed",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "backend",
)


def _recipe_value(value: Any) -> Any:
    """A field's value as YAML can hold it (enums unwrapped, containers walked), or `_NOT_PLAIN`."""
    value = plain(value)
    if isinstance(value, (list, tuple)):
        return [_recipe_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _recipe_value(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    # Objects that __post_init__ builds from a plain value (accelerator_config, ...): not recipe material.
    return _NOT_PLAIN


_NOT_PLAIN = object()


def resolved_recipe(model_args, data_args, training_args) -> dict[str, Any]:
    """The recipe as it ran: every model and data field, and the training fields that differ from defaults.

    The token is never included. The result parses back through `RecipeParser` to the same run.
    """
    recipe: dict[str, Any] = {}
    for args in (model_args, data_args):
        values = vars(args)
        recipe.update({f.name: _recipe_value(values[f.name]) for f in dataclasses.fields(args)})
    training_values = vars(training_args)
    for f in dataclasses.fields(PipelineTrainingArguments):
        if not f.init or f.name in SECRET_FIELDS or f.name == "local_rank" or f.name in training_args._machine_fields:
            continue
        value = _recipe_value(training_values[f.name])
        if value is _NOT_PLAIN:
            continue
        default = _recipe_value(f.default) if f.default is not dataclasses.MISSING else None
        if f.name in ALWAYS_SAVED or value != default:
            # Normalised forms the parser would not take back (report_to ["none"] after __post_init__).
            if f.name == "report_to" and value in (["none"], []):
                continue
            recipe[f.name] = value
    return recipe


def save_recipe(recipe: dict[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write the resolved recipe as `recipe.yaml` in `output_dir`."""
    path = Path(output_dir) / RECIPE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Resolved recipe written by vit-pipeline; run it again with: vit-pipeline train " + str(path) + "\n"
    path.write_text(header + yaml.safe_dump(json.loads(json.dumps(recipe)), sort_keys=False))
    return path
