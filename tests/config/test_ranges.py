"""Every number a recipe sets is range-checked before anything loads, in one line that names it."""

from __future__ import annotations

import pytest

from vit_pipeline import PipelineError
from vit_pipeline.cli import main
from vit_pipeline.config import RecipeParser

BASE = ["--model_name_or_path", "some/model", "--dataset_name", "some/data"]

BAD = [
    ("--learning_rate", "-1", "learning_rate must be > 0"),
    ("--learning_rate", "nan", "learning_rate must be > 0"),
    ("--learning_rate", "inf", "learning_rate must be > 0"),
    ("--per_device_train_batch_size", "0", "per_device_train_batch_size must be >= 1"),
    ("--per_device_eval_batch_size", "-2", "per_device_eval_batch_size must be >= 1"),
    ("--gradient_accumulation_steps", "0", "gradient_accumulation_steps must be >= 1"),
    ("--num_train_epochs", "0", "num_train_epochs must be > 0"),
    ("--max_steps", "0", "max_steps must be >= 1"),
    ("--warmup_steps", "-1", "warmup_steps must be >= 0"),
    ("--weight_decay", "-0.1", "weight_decay must be >= 0"),
    ("--max_grad_norm", "-1", "max_grad_norm must be >= 0"),
    ("--adam_beta1", "1", "adam_beta1 must be in [0, 1)"),
    ("--adam_epsilon", "0", "adam_epsilon must be > 0"),
    ("--label_smoothing_factor", "1.5", "label_smoothing_factor must be in [0, 1)"),
    ("--save_total_limit", "0", "save_total_limit must be >= 1"),
    ("--logging_steps", "-5", "logging_steps must be > 0"),
    ("--seed", "-1", "seed must be in [0, 4294967295]"),
    ("--dataloader_num_workers", "-3", "dataloader_num_workers must be >= -1"),
    ("--early_stopping_threshold", "-1", "early_stopping_threshold must be >= 0"),
    ("--lora_alpha", "0", "lora_alpha must be > 0"),
    ("--preprocessing_num_workers", "0", "preprocessing_num_workers must be >= 1"),
]


@pytest.mark.parametrize(("flag", "value", "message"), BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_out_of_range_number_is_one_line_naming_it(flag, value, message):
    with pytest.raises(PipelineError) as err:
        RecipeParser().parse([*BASE, flag, value])
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text and "(got " in text


def test_max_steps_makes_num_train_epochs_irrelevant():
    *_, training_args, _ = RecipeParser().parse([*BASE, "--max_steps", "5", "--num_train_epochs", "0"])
    assert training_args.max_steps == 5


def test_output_dir_that_is_a_file(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    with pytest.raises(PipelineError, match=r"output_dir .*results.txt is an existing file"):
        RecipeParser().parse([*BASE, "--output_dir", str(a_file)])
    with pytest.raises(PipelineError, match=r"is inside .*results.txt, which is an existing file"):
        RecipeParser().parse([*BASE, "--output_dir", str(a_file / "run")])


def test_bad_numbers_stop_the_real_command_before_anything_loads(tiny_vit, digits_folder, tmp_path, capsys):
    out = tmp_path / "out"
    for flag, value in (("--learning_rate", "-1"), ("--per_device_train_batch_size", "0")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--model_name_or_path", str(tiny_vit), "--dataset_name", str(digits_folder),
                  "--output_dir", str(out), flag, value])
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [f"vit-pipeline: error: {flag[2:]} must be >= 1 (got 0)" if value == "0" else
                         f"vit-pipeline: error: {flag[2:]} must be > 0 (got -1.0): try 5e-5 for fine-tuning"]
        assert not out.exists()
