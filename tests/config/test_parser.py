"""The recipe parser: YAML in, flags override, unknown keys / wrong types / contradictions are one-line errors."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import run_cli
from vit_pipeline import PipelineError
from vit_pipeline.config import RecipeParser, resolved_recipe, save_recipe


def write(tmp_path, recipe: dict, name: str = "r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


BASE = {"model_name_or_path": "org/model", "dataset_name": "org/data"}


def parse(*argv):
    return RecipeParser().parse(list(argv))


def test_yaml_values_and_flag_override(tmp_path):
    path = write(tmp_path, {**BASE, "learning_rate": 3.0e-4, "num_train_epochs": 2, "horizontal_flip": False,
                            "report_to": ["tensorboard"], "lr_scheduler_kwargs": {"num_cycles": 2}})
    model_args, data_args, args, recipe = parse(path, "--learning_rate", "1e-3", "--seed", "7")
    assert recipe == path
    assert model_args.model_name_or_path == "org/model"
    assert data_args.horizontal_flip is False
    assert args.learning_rate == 1e-3  # the flag wins
    assert args.num_train_epochs == 2 and args.seed == 7
    assert args.report_to == ["tensorboard"]
    assert args.lr_scheduler_kwargs == {"num_cycles": 2}


def test_config_flag_and_yaml_string_float(tmp_path):
    # YAML 1.1 reads 2e-5 (no dot) as a string: the parser still converts it to the field's type.
    path = write(tmp_path, {**BASE, "learning_rate": "2e-5"})
    _, _, args, _ = parse("--config", path)
    assert args.learning_rate == 2e-5


def test_pipeline_defaults(tmp_path):
    _, data_args, args, _ = parse(write(tmp_path, BASE))
    assert args.eval_strategy == "epoch" and args.save_strategy == "epoch"
    assert args.load_best_model_at_end and args.metric_for_best_model == "accuracy"
    assert args.remove_unused_columns is False
    assert args.dataloader_num_workers >= 0
    assert data_args.train_val_split == 0.15 and data_args.bad_images == "error"


@pytest.mark.parametrize("recipe, argv, message", [
    ({**BASE, "learnig_rate": 1e-3}, [], "unknown key 'learnig_rate' in .*did you mean 'learning_rate'"),
    (BASE, ["--num_train_epoch", "3"], "unknown option --num_train_epoch: did you mean 'num_train_epochs'"),
    ({**BASE, "learning_rate": "fast"}, [], "argument --learning_rate.*invalid float value: 'fast'"),
    ({**BASE, "bad_images": "ignore"}, [], "argument --bad_images.*invalid choice: 'ignore'"),
    ({"model_name_or_path": "org/model"}, [], "no data: set dataset_name"),
    ({**BASE, "train_dir": "x"}, [], "either dataset_name or train_dir"),
    ({"dataset_name": "org/data"}, [], "model_name_or_path is not set"),
    ({**BASE, "train_val_split": 1.5}, [], "train_val_split must be between 0 and 1"),
    ({**BASE, "max_train_samples": 0}, [], "max_train_samples must be a positive"),
    # A contradiction TrainingArguments itself detects: its sentence comes through as one line.
    ({**BASE, "eval_strategy": "no"}, [], "load_best_model_at_end"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, recipe, argv, message):
    with pytest.raises(PipelineError, match=message) as err:
        parse(write(tmp_path, recipe), *argv)
    assert "\n" not in str(err.value)


def test_bad_recipe_files(tmp_path):
    with pytest.raises(PipelineError, match="cannot read recipe"):
        parse(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        parse(str(bad))
    bad.write_text("- a\n- b\n")
    with pytest.raises(PipelineError, match="must be a mapping"):
        parse(str(bad))
    with pytest.raises(PipelineError, match="must be a .yaml file"):
        parse("recipe.txt")


def test_resolved_recipe_round_trip_without_token(tmp_path):
    path = write(tmp_path, {**BASE, "hub_token": "hf_secret_value", "learning_rate": 1.0e-4, "bf16": False})
    model_args, data_args, args, _ = parse(path, "--seed", "3")
    recipe = resolved_recipe(model_args, data_args, args)
    assert "hub_token" not in recipe and recipe["seed"] == 3 and recipe["learning_rate"] == 1e-4
    saved = save_recipe(recipe, tmp_path / "out")
    assert "hf_secret_value" not in saved.read_text()
    m2, d2, a2, _ = parse(str(saved))
    assert (m2, d2) == (model_args, data_args) and a2.seed == 3


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
    # The real command: the error is one line on stderr, the exit code is non-zero, nothing is written.
    out = tmp_path / "out"
    path = write(tmp_path, {**BASE, "output_dir": str(out), "learnig_rate": 1})
    result = run_cli("train", path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"vit-pipeline: error: unknown key 'learnig_rate' in {path}: did you mean 'learning_rate'?"]
    assert not out.exists()


@pytest.mark.slow
def test_cli_usage_and_unknown_command():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr
    result = run_cli("train", "--help")
    assert result.returncode == 0
    for option in ("--model_name_or_path", "--dataset_name", "--train_val_split", "--learning_rate", "--backend"):
        assert option in result.stdout


def test_console_script_entry_point_is_declared():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["vit-pipeline"] == "vit_pipeline.cli:main"
