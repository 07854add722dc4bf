"""Typed configuration: the argument dataclasses, the strict recipe parser and the resolved recipe."""

from vit_pipeline.config.arguments import DATACLASSES, RECIPE_FILE, DataArguments, ModelArguments
from vit_pipeline.config.machine import speed_summary
from vit_pipeline.config.parser import RecipeParser, check_combination
from vit_pipeline.config.recipe import resolved_recipe, save_recipe
from vit_pipeline.config.training_args import PipelineTrainingArguments

__all__ = [
    "DATACLASSES",
    "RECIPE_FILE",
    "DataArguments",
    "ModelArguments",
    "PipelineTrainingArguments",
    "RecipeParser",
    "check_combination",
    "resolved_recipe",
    "save_recipe",
    "speed_summary",
]
