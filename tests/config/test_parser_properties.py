"""Property-based: any recipe, however hostile, parses or is refused with one `PipelineError` line; never another
exception. Random keys (known, unknown, nested, unicode), random values (wrong types, huge numbers, NaN, lists,
mappings), random flags."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vit_pipeline import PipelineError
from vit_pipeline.config import RecipeParser

FIELDS = sorted(RecipeParser().known_fields())
# Fields whose values matter most (numbers the config range-checks, choices, paths), drawn more often.
HOT = ["learning_rate", "per_device_train_batch_size", "num_train_epochs", "max_steps", "warmup_steps",
       "weight_decay", "max_grad_norm", "save_total_limit", "gradient_accumulation_steps", "seed", "output_dir",
       "train_val_split", "image_size", "lora_r", "bf16", "fp16", "eval_strategy", "save_strategy", "optim",
       "lr_scheduler_type", "report_to", "backend", "hub_strategy", "label_column_name", "fsdp_config",
       "lr_scheduler_kwargs", "early_stopping_patience", "ema_decay", "mixup_alpha", "logging_steps"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "nan", "-1", "1e999", "true", "steps", "epoch", "ÿ", "日本", "../..", "--x"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
keys = st.one_of(st.sampled_from(HOT), st.sampled_from(FIELDS), st.text(min_size=1, max_size=10))
recipes = st.dictionaries(keys, values, max_size=6)
BASE = {"model_name_or_path": "some/model", "dataset_name": "some/data"}


def _parse(argv: list[str]) -> None:
    try:
        RecipeParser().parse(argv)
    except PipelineError as err:
        assert str(err) and "\n" not in str(err).strip(), repr(str(err))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes, with_base=st.booleans())
def test_any_recipe_parses_or_is_one_pipeline_error(recipe, with_base):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(yaml.safe_dump({**(BASE if with_base else {}), **recipe}, allow_unicode=True))
        _parse([str(path)])


@settings(max_examples=25, deadline=None)
@given(text=st.text(max_size=80))
def test_any_recipe_text_parses_or_is_one_pipeline_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(text)
        _parse([str(path), "--model_name_or_path", "m", "--dataset_name", "d"])


@settings(max_examples=25, deadline=None)
@given(flags=st.lists(st.one_of(st.sampled_from([f"--{k}" for k in HOT]), st.text(max_size=8)), max_size=6))
def test_any_flags_parse_or_are_one_pipeline_error(flags):
    _parse(["--model_name_or_path", "m", "--dataset_name", "d", *flags])
