"""Every recipe in recipes/ (subfolders too) parses through the real parser, so a recipe that drifts from the code
breaks CI instead of a user's run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vit_pipeline.config import RecipeParser, resolved_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
# recipes/accelerate/ holds `accelerate launch` config files, not training recipes.
TRAINING_RECIPES = sorted(p for p in RECIPES.rglob("*.yaml") if "accelerate" not in p.relative_to(RECIPES).parts)


def test_recipes_exist():
    assert (RECIPES / "quickstart.yaml") in TRAINING_RECIPES


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_parses(recipe, tmp_path):
    model_args, data_args, training_args, path = RecipeParser().parse([str(recipe), "--output_dir", str(tmp_path)])
    assert path == str(recipe)
    assert model_args.model_name_or_path
    assert data_args.dataset_name or data_args.train_dir
    # Each recipe opens with the command that runs it.
    assert f"vit-pipeline train recipes/{recipe.relative_to(RECIPES)}" in recipe.read_text().split("\n\n")[0]
    # The resolved recipe written to the output folder parses back to the same values.
    resolved = resolved_recipe(model_args, data_args, training_args)
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(resolved))
    m2, d2, t2, _ = RecipeParser().parse([str(again)])
    assert (m2, d2) == (model_args, data_args)
    assert resolved_recipe(m2, d2, t2) == resolved
