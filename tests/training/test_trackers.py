"""`report_to: tensorboard` and `report_to: trackio` on both backends, read back with each tracker's own reader.

A tiny run logs every 2 steps and evaluates every epoch; the test then reads the TensorBoard event files with
tensorboard's `EventAccumulator` and trackio's local SQLite store (in `TRACKIO_DIR`), and checks that the training loss,
the learning rate and the eval metrics are there at the steps of the run's own log (`trainer_state.json`), and that the
hyperparameters were logged once (the training arguments by each integration, the resolved recipe by the
pipeline).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from vit_pipeline import PipelineError

LEARNING_RATE = 3e-4
PROJECT = "vitpipeline-test"


def _train(backend: str, model: Path, data: Path, out: Path, trackio_dir: Path) -> list[dict]:
    result = run_cli(
        "train", "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out),
        "--backend", backend, "--report_to", "tensorboard,trackio", "--project", PROJECT, "--run_name", backend,
        "--num_train_epochs", "2", "--max_train_samples", "48", "--per_device_train_batch_size", "12",
        "--logging_strategy", "steps", "--logging_steps", "2", "--learning_rate", str(LEARNING_RATE),
        "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--horizontal_flip", "false",
        env={"TRACKIO_DIR": str(trackio_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    # The run's own log, as training went (the final re-evaluation of the best model comes after it).
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def _tensorboard_scalars(runs: Path) -> tuple[dict[str, dict[int, list[float]]], list]:
    """Every scalar in every event folder under `runs` as {tag: {step: [values]}}, and the accumulators."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    accumulators = []
    for folder in sorted({p.parent for p in runs.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        accumulators.append(accumulator)
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                scalars[tag][event.step].append(event.value)
    return scalars, accumulators


def _trackio_store(trackio_dir: Path, run: str) -> tuple[dict[str, dict[int, list[float]]], list[dict]]:
    """trackio's local store for `run`: {key: {global step: [values]}} and the run's config rows."""
    (db,) = trackio_dir.glob("*.db")
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with sqlite3.connect(db) as con:
        for step, metrics in con.execute("SELECT step, metrics FROM metrics WHERE run_name = ?", (run,)):
            metrics = json.loads(metrics)
            # The Trainer's integration logs the global step as a value (trackio counts its own steps);
            # Accelerate's tracker passes it as trackio's step.
            step = int(metrics.pop("train/global_step", step))
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    values[key][step].append(value)
        configs = [json.loads(c) for (c,) in con.execute("SELECT config FROM configs WHERE run_name = ?", (run,))]
    return values, configs


def _check_logged(values: dict[str, dict[int, list[float]]], log_history: list[dict], where: str) -> None:
    """Every training loss, learning rate and eval metric of the log is in `values` at its step."""
    checked = 0
    for entry in log_history:
        step = entry["step"]
        for key, tag in (("loss", "train/loss"), ("learning_rate", "train/learning_rate"),
                         ("eval_accuracy", "eval/accuracy"), ("eval_loss", "eval/loss"), ("eval_f1", "eval/f1")):
            if key in entry:
                assert any(v == pytest.approx(entry[key], rel=1e-4) for v in values[tag][step]), (
                    f"{where}: {tag} at step {step} is {values[tag].get(step)}, the log says {entry[key]}")
                checked += 1
    # 48 rows / 12 = 4 steps per epoch, logged every 2: 4 train logs (loss, lr) and 2 evaluations (3 metrics each).
    assert checked == 4 * 2 + 2 * 3, f"{where}: only {checked} values checked"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["trainer", "accelerate"])
def test_tensorboard_and_trackio_hold_what_the_run_logged(backend, tiny_vit, digits_folder, tmp_path):
    out, trackio_dir = tmp_path / "out", tmp_path / "trackio"
    log_history = _train(backend, tiny_vit, digits_folder, out, trackio_dir)

    # TensorBoard: the event files under output_dir/runs, read with tensorboard's own reader.
    scalars, accumulators = _tensorboard_scalars(out / "runs")
    _check_logged(scalars, log_history, "tensorboard")
    # The hyperparameters, once: the Trainer writes its arguments as a text summary, Accelerate as hparams.
    if backend == "trainer":
        texts = [event for acc in accumulators if "args/text_summary" in acc.Tags()["tensors"]
                 for event in acc.Tensors("args/text_summary")]
        assert len(texts) == 1
        logged_args = json.loads(texts[0].tensor_proto.string_val[0])
        assert logged_args["learning_rate"] == LEARNING_RATE and logged_args["num_train_epochs"] == 2
    else:
        from tensorboard.plugins.hparams import plugin_data_pb2

        sessions = []
        for accumulator in accumulators:
            try:
                content = accumulator.PluginTagToContent("hparams")
            except KeyError:  # a folder with no hparams summary
                continue
            sessions += [plugin_data_pb2.HParamsPluginData.FromString(data).session_start_info
                         for tag, data in content.items() if tag.endswith("session_start_info")]
        assert len(sessions) == 1
        assert sessions[0].hparams["learning_rate"].number_value == pytest.approx(LEARNING_RATE)
        assert sessions[0].hparams["num_train_epochs"].number_value == 2

    # The resolved recipe (model and data options too), once, as a YAML text summary of the run.
    recipes = [event for acc in accumulators if "recipe/text_summary" in acc.Tags()["tensors"]
               for event in acc.Tensors("recipe/text_summary")]
    assert len(recipes) == 1
    logged_recipe = yaml.safe_load(recipes[0].tensor_proto.string_val[0].decode().strip("`").removeprefix("yaml\n"))
    assert logged_recipe == yaml.safe_load((out / "recipe.yaml").read_text())

    # trackio: its local SQLite store in TRACKIO_DIR, the project and run the recipe named.
    assert (trackio_dir / f"{PROJECT}.db").is_file()
    values, configs = _trackio_store(trackio_dir, backend)
    _check_logged(values, log_history, "trackio")
    assert len(configs) == 1
    assert configs[0]["learning_rate"] == LEARNING_RATE and configs[0]["num_train_epochs"] == 2
    assert configs[0]["recipe/dataset_name"] == str(digits_folder)
    assert configs[0]["recipe/model_name_or_path"] == str(tiny_vit)
    assert configs[0]["recipe/learning_rate"] == LEARNING_RATE


@pytest.mark.parametrize("backend", ["trainer", "accelerate"])
@pytest.mark.parametrize("tracker", ["tensorboard", "trackio"])
def test_missing_tracker_names_the_track_extra(backend, tracker, monkeypatch, tmp_path):
    from vit_pipeline.config import RecipeParser

    # As if the package were not installed: importlib finds no module whose sys.modules entry is None.
    for module in ("tensorboard", "tensorboardX", "trackio"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(PipelineError, match=rf"report_to {tracker} needs the track extra: "
                                            r"pip install 'vit-pipeline\[track\]'"):
        RecipeParser().parse(["--model_name_or_path", "x", "--dataset_name", "y", "--output_dir", str(tmp_path),
                              "--backend", backend, "--report_to", tracker])


def test_report_to_takes_a_comma_list_and_refuses_unknown_names(tmp_path):
    from vit_pipeline.config import RecipeParser

    base = ["--model_name_or_path", "x", "--dataset_name", "y", "--output_dir", str(tmp_path)]
    _, _, args, _ = RecipeParser().parse([*base, "--report_to", "tensorboard,trackio"])
    assert args.report_to == ["tensorboard", "trackio"]
    with pytest.raises(PipelineError, match="report_to tensorbord is not a Trainer integration"):
        RecipeParser().parse([*base, "--report_to", "tensorbord"])
