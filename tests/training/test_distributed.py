"""Many processes: real 2-process runs on CPU (gloo) for both backends, launched by torchrun and by `accelerate launch`
with a shipped config; and every config in recipes/accelerate/ goes through accelerate's own loader and launcher."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import FAST, REPO

ACCELERATE_CONFIGS = REPO / "recipes" / "accelerate"
EXPECTED_CONFIGS = {"single_gpu.yaml", "multi_gpu_ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml", "two_machines.yaml"}
# 37 eval images, 8 per process and batch: 37 is not a multiple of 2 x 8, so the last batch is uneven and accelerate
# pads it with repeated images that the metrics must not count.
EVAL_ROWS, EVAL_BATCH, TRAIN_ROWS, TRAIN_BATCH, EPOCHS = 37, 8, 64, 8, 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(launcher: str, args: list[str]) -> subprocess.CompletedProcess:
    """Run `pipeline ARGS` on 2 processes with `launcher`, from the repository root."""
    port = str(free_port())
    if launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    else:  # the shipped DDP config; with no GPU the pipeline switches the processes to the CPU and gloo
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(ACCELERATE_CONFIGS / "multi_gpu_ddp.yaml"), "--main_process_port", port]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, "-m", "vit_pipeline", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def evaluate_saved_model(out: Path, data_args) -> dict[str, float]:
    """Evaluate the saved model in this (single) process on the run's eval split, as the pipeline evaluates."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from vit_pipeline.data.decode import to_rgb
    from vit_pipeline.data.load import load_splits
    from vit_pipeline.data.transforms import build_transforms
    from vit_pipeline.evaluation.metrics import compute_metrics

    splits = load_splits(data_args, seed=42)
    assert len(splits.eval) == EVAL_ROWS and EVAL_ROWS % (2 * EVAL_BATCH)
    _, eval_transform = build_transforms(AutoImageProcessor.from_pretrained(out), data_args)
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    pixels = torch.stack([eval_transform(to_rgb(row["image"])) for row in splits.eval])
    labels = torch.tensor(splits.eval["label"])
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    metrics = compute_metrics(logits.numpy(), labels.numpy(), len(splits.labels))
    metrics["loss"] = torch.nn.functional.cross_entropy(logits, labels).item()
    return metrics


@pytest.mark.parametrize("backend, launcher", [("trainer", "torchrun"), ("accelerate", "torchrun"),
                                               ("trainer", "accelerate launch")])
@pytest.mark.slow
def test_two_processes_train_and_evaluate_exactly(backend, launcher, tiny_vit, digits_folder, tmp_path):
    from vit_pipeline.config import DataArguments

    out = tmp_path / "out"
    result = launch(launcher, [
        "train", "--model_name_or_path", str(tiny_vit), "--dataset_name", str(digits_folder), "--output_dir", str(out),
        *FAST, "--backend", backend, "--horizontal_flip", "false", "--learning_rate", "1e-3",
        "--num_train_epochs", str(EPOCHS), "--max_train_samples", str(TRAIN_ROWS),
        "--max_eval_samples", str(EVAL_ROWS), "--per_device_train_batch_size", str(TRAIN_BATCH),
        "--per_device_eval_batch_size", str(EVAL_BATCH),
        # The saved model is the trained one (not divided by a temperature), so its loss is the run's eval_loss.
        "--calibrate", "false"])
    assert result.returncode == 0, result.stderr[-4000:]
    logs = result.stdout + result.stderr
    # Both processes ran and trained together: each saw half of the data, so an epoch is 64 / (8 x 2) = 4 steps.
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == EPOCHS * TRAIN_ROWS // (TRAIN_BATCH * 2)
    assert "- num_processes: 2" in (out / "README.md").read_text()
    assert f"- total_train_batch_size: {TRAIN_BATCH * 2}" in (out / "README.md").read_text()
    if backend == "accelerate":
        assert re.search(r"2 process\(es\) \(MULTI_CPU", logs), logs[-3000:]
    # One output folder, written once (only the main process writes and reports).
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert logs.count("Done: eval accuracy") == 1
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert "use_cpu" not in recipe and "ddp_backend" not in recipe, "machine-chosen settings leaked into the recipe"

    # The metrics gathered from both processes are those of the saved model evaluated here on one process.
    expected = evaluate_saved_model(out, DataArguments(dataset_name=str(digits_folder), max_eval_samples=EVAL_ROWS,
                                                       horizontal_flip=False))
    got = json.loads((out / "eval_results.json").read_text())
    for name in ("accuracy", "f1", "precision", "recall", "top5_accuracy"):
        assert got[f"eval_{name}"] == pytest.approx(expected[name], abs=1e-9), name
    if backend == "accelerate":
        assert got["eval_loss"] == pytest.approx(expected["loss"], abs=1e-5)
    else:
        # The Trainer averages each batch's mean loss, and the padded last batch's mean includes the repeated images
        # (transformers evaluation_loop: `losses.repeat(batch_size)`), so its eval_loss is only close.
        assert got["eval_loss"] == pytest.approx(expected["loss"], abs=0.05)


@pytest.mark.parametrize("config", sorted(ACCELERATE_CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_config_loads_and_launches(config, monkeypatch):
    """Each config loads with accelerate's loader, passes `accelerate launch` validation, and the plugin the launched
    processes would build (DDP, FSDP, DeepSpeed) accepts the environment the launcher sets."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_multi_gpu_env,
        prepare_simple_launcher_cmd_env,
    )

    # It opens with the command that uses it.
    header = config.read_text().split("\ncompute_environment")[0]
    assert f"accelerate launch --config_file recipes/accelerate/{config.name} -m vit_pipeline train" in header
    loaded = load_config_from_file(str(config))
    assert isinstance(loaded, ClusterConfig)
    assert loaded.mixed_precision == "no", "precision belongs to the recipe (bf16: true), not the launcher"

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "vit_pipeline", "train",
                                               "recipes/quickstart.yaml"])
    args, defaults, _ = _validate_launch_command(args)
    assert args.num_processes == loaded.num_processes and args.num_machines == loaded.num_machines
    if args.use_deepspeed:
        # What `accelerate launch` adds before it starts DeepSpeed processes.
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    else:
        _, env = prepare_simple_launcher_cmd_env(args)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    if args.use_fsdp:
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.auto_wrap_policy is not None
    elif args.use_deepspeed:
        plugin = DeepSpeedPlugin()
        assert plugin.deepspeed_config["zero_optimization"]["stage"] == 2
        # Left to the recipe: accelerate fills them from the loop's arguments.
        assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
        assert plugin.deepspeed_config["gradient_clipping"] == "auto"
    if loaded.num_machines > 1:
        assert loaded.main_process_ip and loaded.main_process_port


def test_the_shipped_configs_are_the_documented_ones():
    assert {p.name for p in ACCELERATE_CONFIGS.glob("*.yaml")} == EXPECTED_CONFIGS
    page = (REPO / "docs" / "many-machines.md").read_text()
    section = page.split("## One training on many GPUs or machines")[1].split("\n## ")[0]
    for name in EXPECTED_CONFIGS:
        assert f"--config_file recipes/accelerate/{name}" in section, name
    for path in re.findall(r"recipes/[\w/.-]+\.yaml", section):
        assert (REPO / path).is_file(), path


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["trainer", "accelerate"])
def test_two_processes_give_the_multilabel_metrics_of_one(backend, tiny_vit, tagged_digits_parquet, tmp_path):
    """Multi-label under torchrun: the eval metrics (map, F1s, ...) gathered from 2 processes, with the uneven last
    batch padded, are those of the saved model scored in one process; thresholds.json is written once, from them."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from vit_pipeline.config import DataArguments
    from vit_pipeline.data.decode import to_rgb
    from vit_pipeline.data.load import load_splits
    from vit_pipeline.data.multilabel import label_matrix
    from vit_pipeline.data.transforms import build_transforms
    from vit_pipeline.evaluation.multilabel import compute_multilabel_metrics, threshold_summary

    out = tmp_path / "out"
    result = launch("torchrun", [
        "train", "--model_name_or_path", str(tiny_vit), "--dataset_name", str(tagged_digits_parquet),
        "--output_dir", str(out), *FAST, "--backend", backend, "--horizontal_flip", "false",
        "--random_resized_crop", "false", "--learning_rate", "5e-3", "--num_train_epochs", str(EPOCHS),
        "--max_train_samples", str(TRAIN_ROWS), "--max_eval_samples", str(EVAL_ROWS),
        "--per_device_train_batch_size", str(TRAIN_BATCH), "--per_device_eval_batch_size", str(EVAL_BATCH)])
    assert result.returncode == 0, result.stderr[-4000:]
    assert (result.stdout + result.stderr).count("Done: eval map") == 1
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == EPOCHS * TRAIN_ROWS // (TRAIN_BATCH * 2)

    data_args = DataArguments(dataset_name=str(tagged_digits_parquet), max_eval_samples=EVAL_ROWS,
                              horizontal_flip=False, random_resized_crop=False)
    splits = load_splits(data_args, seed=42)
    assert len(splits.eval) == EVAL_ROWS and EVAL_ROWS % (2 * EVAL_BATCH)
    _, eval_transform = build_transforms(AutoImageProcessor.from_pretrained(out), data_args)
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.stack([eval_transform(to_rgb(r["image"])) for r in splits.eval])).logits
    labels = label_matrix(splits.eval)
    expected = compute_multilabel_metrics(logits.numpy(), labels)
    got = json.loads((out / "eval_results.json").read_text())
    for name, value in expected.items():
        assert got[f"eval_{name}"] == pytest.approx(value, abs=1e-6), name
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(labels)).item()
    assert got["eval_loss"] == pytest.approx(loss, abs=1e-5 if backend == "accelerate" else 0.05)
    tuned = threshold_summary(torch.sigmoid(logits).double().numpy(), labels, splits.labels, splits.eval_split_name)
    assert json.loads((out / "thresholds.json").read_text())["thresholds"] == pytest.approx(tuned["thresholds"],
                                                                                           abs=1e-4)


@pytest.mark.slow
def test_a_non_finite_loss_stops_every_process_at_the_same_step(tiny_vit, digits_folder, tmp_path):
    out = tmp_path / "out"
    done = launch("torchrun", ["train", "--model_name_or_path", str(tiny_vit), "--dataset_name", str(digits_folder),
                               "--output_dir", str(out), *FAST, "--max_train_samples", "64", "--max_eval_samples",
                               "16", "--per_device_train_batch_size", "8", "--learning_rate", "1e9",
                               "--max_grad_norm", "0"])
    assert done.returncode != 0
    # Both processes stop at the same step with the one line (neither waits forever for the other); nothing is saved.
    stops = re.findall(r"vit-pipeline: error: training loss is (nan|inf|not finite on another process) at step (\d+)",
                       done.stderr)
    assert len(stops) == 2 and len({step for _, step in stops}) == 1, done.stderr[-3000:]
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()
