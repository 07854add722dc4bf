"""Readable progress on both backends: a line per evaluation with the best so far, no printed dicts, ETAs."""

from __future__ import annotations

import re

import pytest
from transformers import TrainerState

from tests.conftest import run_cli
from vit_pipeline.config.training_args import PipelineTrainingArguments
from vit_pipeline.training.progress import best_so_far, evaluation_line

HISTORY = [
    {"loss": 2.0, "learning_rate": 1e-4, "epoch": 1.0, "step": 4},
    {"eval_accuracy": 0.5, "eval_loss": 1.5, "epoch": 1.0, "step": 4},
    {"eval_accuracy": 0.75, "eval_loss": 1.1, "epoch": 2.0, "step": 8},
    {"eval_accuracy": 0.625, "eval_loss": 0.9, "epoch": 3.0, "step": 12},
]


def test_best_so_far_follows_metric_for_best_model():
    assert best_so_far(HISTORY, "accuracy", True) == (0.75, 2.0)
    assert best_so_far(HISTORY, "eval_loss", False) == (0.9, 3.0)
    assert best_so_far(HISTORY, "loss", None) == (0.9, 3.0)  # a loss is lower-is-better by default
    assert best_so_far(HISTORY, "f1", True) is None and best_so_far(HISTORY, None, True) is None


def test_evaluation_line_says_where_what_and_the_best(tmp_path):
    args = PipelineTrainingArguments(output_dir=str(tmp_path), report_to="none")
    state = TrainerState(epoch=3.0, global_step=12, max_steps=12, num_train_epochs=3, log_history=HISTORY)
    metrics = {"eval_loss": 0.9, "eval_accuracy": 0.625, "eval_f1": 0.6, "eval_runtime": 1.2,
               "eval_samples_per_second": 30.0, "epoch": 3.0}
    assert evaluation_line(metrics, state, args) == (
        "Eval epoch 3/3: accuracy 0.6250, f1 0.6000, loss 0.9000 | best accuracy 0.7500 (epoch 2)")
    state.epoch, state.global_step = 2.5, 10
    assert evaluation_line(metrics, state, args).startswith("Eval epoch 2.50/3 (step 10/12): accuracy 0.6250")
    assert evaluation_line(metrics, state, args, final=True) == (
        "Saved model (best checkpoint) on the eval set: accuracy 0.6250, f1 0.6000, loss 0.9000")


@pytest.mark.slow
@pytest.mark.parametrize("backend, bars", [("trainer", True), ("accelerate", False)])
def test_console_shows_a_line_per_evaluation_and_no_dicts(backend, bars, tiny_vit, digits_folder, tmp_path):
    result = run_cli("train", "--model_name_or_path", str(tiny_vit), "--dataset_name", str(digits_folder),
                     "--output_dir", str(tmp_path / "out"), "--backend", backend, "--num_train_epochs", "2",
                     "--max_train_samples", "48", "--per_device_train_batch_size", "12", "--logging_strategy",
                     "steps", "--logging_steps", "2", "--dataloader_num_workers", "0", "--report_to", "none",
                     "--disable_tqdm", str(not bars).lower(), "--horizontal_flip", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    evaluations = re.findall(r"Eval epoch (\d)/2: accuracy [\d.]+, .*\| best accuracy ([\d.]+) \(epoch (\d)\)",
                             console)
    assert [epoch for epoch, _, _ in evaluations] == ["1", "2"]
    assert "Saved model (best checkpoint) on the eval set: accuracy" in console
    assert re.search(r"Trained 8 steps in \d+:\d\d", console)
    # The Trainer's dict dumps ({'loss': ..., 'eval_accuracy': ...}) are gone from the console.
    assert "{'loss'" not in console and "{'eval_" not in console and "{'train_runtime'" not in console
    if bars:
        assert re.search(r"loss=[\d.]+, lr=", console)  # the bar's postfix
    else:
        trains = re.findall(r"Train epoch [\d.]+/2.*: loss [\d.]+, learning rate \S+ \(\d+:\d\d elapsed, ETA "
                            r"\d+:\d\d\)", console)
        assert len(trains) == 4
