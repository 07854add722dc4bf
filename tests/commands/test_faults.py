"""Faults during `train`, on real runs: a diverging loss, another run's checkpoints, a second run into the same
folder, a full disk, SIGTERM / SIGINT. Each ends in one line, and what was complete before stays resumable."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, REPO, digits, run_cli_here, write_imagefolder
from vit_pipeline.cli import main
from vit_pipeline.config.output_dir import LOCK_FILE

# 16 images of 2 classes, batch 8: 2 steps an epoch, a checkpoint every epoch, each run a few seconds.
SMALL = (*FAST, "--per_device_train_batch_size", "8", "--train_val_split", "0.2", "--save_total_limit", "5")


@pytest.fixture(scope="module")
def two_digits(tmp_path_factory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("two-digits"), {"train": digits(n_per_class=10, classes=2)})


def train(*args: str) -> tuple[int, str]:
    """`vit-pipeline train ARGS` in-process: (exit status, last stderr line)."""
    import io
    from contextlib import redirect_stderr

    stderr = io.StringIO()
    with redirect_stderr(stderr), pytest.raises(SystemExit) as exit_info:
        main(["train", *args])
        raise SystemExit(0)
    lines = stderr.getvalue().strip().splitlines()
    return exit_info.value.code, lines[-1] if lines else ""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != LOCK_FILE}


@pytest.mark.parametrize("backend", ["trainer", "accelerate"])
def test_non_finite_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(tiny_vit, two_digits, tmp_path,
                                                                                backend):
    out = tmp_path / "out"
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    # A checkpoint every step; the huge learning rate makes step 2's loss NaN.
    code, line = train("--model_name_or_path", str(tiny_vit), "--dataset_name", str(two_digits), "--output_dir",
                       str(out), *SMALL, "--num_train_epochs", "3", "--learning_rate", "1e9", "--max_grad_norm", "0",
                       "--save_strategy", "steps", "--save_steps", "1", "--load_best_model_at_end", "false",
                       "--backend", backend)
    assert code == 2
    assert line.startswith("vit-pipeline: error: training loss is nan at step 2 (epoch 1.00): the run stopped "
                           "there, before saving anything of it; try a lower learning_rate (now 1e+09), bf16 instead "
                           "of fp16, or max_grad_norm 1.0 (now 0); the last checkpoint before it, checkpoint-1, is "
                           "kept"), line
    # Nothing of the diverged step is saved: no checkpoint-2, no model, no card claiming results.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1", "recipe.yaml"]
    # The run raised before on_train_end: this process's own SIGTERM / SIGINT handlers are back all the same.
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers


def test_checkpoints_of_another_run_are_not_resumed(tiny_vit, tmp_path):
    out, data = tmp_path / "out", tmp_path / "data"
    write_imagefolder(data, {"train": digits(n_per_class=10, classes=2)})
    code, _ = train("--model_name_or_path", str(tiny_vit), "--dataset_name", str(data), "--output_dir", str(out),
                    *SMALL, "--num_train_epochs", "1")
    assert code == 0
    before = snapshot(out)
    # Other data: the folder's recipe says so before anything loads.
    other = write_imagefolder(tmp_path / "other", {"train": digits(n_per_class=10, classes=3)})
    code, line = train("--model_name_or_path", str(tiny_vit), "--dataset_name", str(other), "--output_dir",
                       str(out), *SMALL, "--num_train_epochs", "1")
    assert code == 2
    assert line.startswith(f"vit-pipeline: error: {out / 'checkpoint-2'} belongs to another run (dataset_name: "
                           f"'{data}' then, '{other}' now): pick a new output_dir, or set overwrite_output_dir: true "
                           "to start over there"), line
    assert snapshot(out) == before
    # The same folder of data, now with a third class: the checkpoint's labels say so once the data has loaded.
    write_imagefolder(data, {"train": digits(n_per_class=10, classes=3)})
    args = ("--model_name_or_path", str(tiny_vit), "--dataset_name", str(data), "--output_dir", str(out), *SMALL,
            "--num_train_epochs", "1")
    code, line = train(*args)
    assert code == 2
    assert "checkpoint-2 belongs to another run: its labels are [0, 1], the data's are [0, 1, 2]" in line, line
    assert snapshot(out) == before
    # overwrite_output_dir starts over in place: the old checkpoints go once data and model have loaded.
    code, _ = train(*args, "--overwrite_output_dir", "true")
    assert code == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3  # 24 images, 20% held out, batch 8: a fresh run of 1 epoch
    config = json.loads((out / "config.json").read_text())
    assert list(config["id2label"].values()) == ["0", "1", "2"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]


def test_overwrite_output_dir_keeps_the_folder_when_the_new_run_fails_to_load(tiny_vit, two_digits, tmp_path):
    out = tmp_path / "out"
    code, _ = train("--model_name_or_path", str(tiny_vit), "--dataset_name", str(two_digits), "--output_dir",
                    str(out), *SMALL, "--num_train_epochs", "1")
    assert code == 0
    before = snapshot(out)
    code, line = train("--model_name_or_path", str(tiny_vit), "--train_dir", str(tmp_path / "missing"),
                       "--output_dir", str(out), "--overwrite_output_dir", "true")
    assert code == 2 and "image folder" in line
    assert snapshot(out) == before


def test_a_second_run_into_a_locked_folder_stops_and_a_stale_lock_is_taken_over(tiny_vit, two_digits, tmp_path,
                                                                                  caplog):
    import socket

    out = tmp_path / "out"
    out.mkdir()
    args = ("--model_name_or_path", str(tiny_vit), "--dataset_name", str(two_digits), "--output_dir", str(out),
            *SMALL, "--num_train_epochs", "1")
    # A run in progress: a live process of this machine holds the lock, as a run started from another shell does.
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / LOCK_FILE).write_text(f"{socket.gethostname()} {running.pid}\n")
        code, line = train(*args)
    finally:
        running.kill()
        running.wait()
    assert code == 2
    assert line == (f"vit-pipeline: error: output_dir {out} is in use by another run (pid {running.pid}, lock "
                    f"{out / LOCK_FILE}): wait for it to finish, stop it, or pick another output_dir")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    # That run was killed and its lock stayed: the next run takes it over, and removes it when done.
    code, _ = train(*args)
    assert code == 0
    assert f"Taking over the lock of a run that is gone (pid {running.pid})" in caplog.text
    assert not (out / LOCK_FILE).exists() and (out / "model.safetensors").is_file()


def test_a_lock_being_written_is_held_and_an_empty_old_one_is_taken_over(tmp_path):
    """Two workers taking one folder at the same moment (compare's workers start together): the second finds the
    first's lock created but not yet written, and must not take it for a dead run's."""
    import os
    import time

    from vit_pipeline.config.output_dir import HALF_WRITTEN_S, try_lock

    (tmp_path / LOCK_FILE).write_text("")
    assert try_lock(tmp_path) is None
    # Empty for longer than a write takes: a run killed between creating and writing it.
    old = time.time() - HALF_WRITTEN_S - 1
    os.utime(tmp_path / LOCK_FILE, (old, old))
    lock = try_lock(tmp_path)
    assert lock is not None and (tmp_path / LOCK_FILE).read_text().split()[-1] == str(os.getpid())
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (a disk that fills up), unmounted afterwards; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_full_disk_is_one_line_and_the_last_complete_checkpoint_resumes(tiny_vit, two_digits, small_disk):
    out = small_disk / "out"
    args = ("--model_name_or_path", str(tiny_vit), "--dataset_name", str(two_digits), "--output_dir", str(out),
            *SMALL, "--num_train_epochs", "4", "--save_total_limit", "100", "--load_best_model_at_end", "false")
    code, line = train(*args)
    assert code == 2
    assert line.startswith(f"vit-pipeline: error: cannot write {out}/checkpoint-"), line
    assert f"free on {small_disk}" in line and "the last complete checkpoint is kept" in line
    # The incomplete checkpoint is gone; every one left is complete.
    kept = sorted(out.glob("checkpoint-*"))
    assert kept and all((p / "trainer_state.json").is_file() for p in kept)
    last = kept[-1].name
    # More room: the same command resumes from the last complete checkpoint and finishes.
    subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)
    code, _ = train(*args)
    assert code == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert int(last.split("-")[1]) < 8


def _interrupted_run(args: list[str], signum: int, after_losses: int = 1) -> subprocess.CompletedProcess:
    """Run `vit-pipeline ARGS`, send `signum` once it has logged `after_losses` training losses; wait for it.

    stdout and stderr come back together (as `stderr`): the Trainer prints its losses, the Accelerate loop logs them.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vit_pipeline", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen, head = 0, []
    for line in proc.stdout:
        head.append(line)
        # A training log line: the readable progress ("Train epoch 0.25: loss 1.0986, ..."), or a dict / key=value.
        seen += bool(re.search(r": loss \d|'loss'|: loss=", line))
        if seen >= after_losses:
            proc.send_signal(signum)
            break
    output, _ = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", "".join(head) + output)


def _losses(out: Path) -> dict[int, float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def _signal_args(model: Path, data: Path, out: Path, backend: str = "trainer") -> list[str]:
    # 30 images, 6 held out, batch 8: 3 steps an epoch, a loss logged every step. Augmentation off: the Trainer
    # restores the random state of a resumed epoch only after fetching its first batch (and loader workers are
    # seeded when the epoch starts), so random crops after a resume differ from an uninterrupted run's.
    return ["train", "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out),
            *FAST, "--num_train_epochs", "3", "--per_device_train_batch_size", "8", "--logging_strategy", "steps",
            "--logging_steps", "1", "--train_val_split", "0.2", "--random_resized_crop", "false",
            "--horizontal_flip", "false", "--backend", backend]


@pytest.fixture(scope="module")
def uninterrupted(tiny_vit, tmp_path_factory) -> tuple[Path, dict[int, float]]:
    """The data folder, and the per-step training losses of a run nobody interrupts."""
    folder = tmp_path_factory.mktemp("signals")
    data = write_imagefolder(folder / "data", {"train": digits(n_per_class=10, classes=3)})
    # In this process: only the interrupted runs need a process of their own (to be sent a signal).
    whole = run_cli_here(*_signal_args(tiny_vit, data, folder / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    return data, _losses(folder / "whole")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code", "backend"),
                         [(signal.SIGTERM, 143, "trainer"), (signal.SIGINT, 130, "trainer"),
                          (signal.SIGTERM, 143, "accelerate")], ids=["SIGTERM", "SIGINT", "SIGTERM-accelerate"])
def test_signal_saves_a_checkpoint_and_the_same_command_resumes_at_that_step(tiny_vit, uninterrupted, tmp_path,
                                                                              signum, code, backend):
    data, expected = uninterrupted
    assert sorted(expected) == list(range(1, 10))
    out = tmp_path / "out"
    stopped = _interrupted_run(_signal_args(tiny_vit, data, out, backend), signum)
    assert stopped.returncode == code, stopped.stderr[-2000:]
    line = stopped.stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert line.startswith(f"vit-pipeline: error: stopped by {name} at step "), line
    step = int(line.split(" at step ")[1].split(":")[0])
    assert 1 <= step < 9
    assert line.endswith(f"saved checkpoint-{step} in {out}; run the same command to resume from step {step}")
    assert (out / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not (out / "model.safetensors").exists() and not (out / "README.md").exists()

    # The same command again (in this process: the resume needs no process of its own).
    resumed = run_cli_here(*_signal_args(tiny_vit, data, out, backend))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resuming from {out / f'checkpoint-{step}'}" in resumed.stderr
    # The per-step losses of interrupted + resumed are an uninterrupted run's, step for step.
    losses = _losses(out)
    assert sorted(losses) == list(range(1, 10))
    assert losses == pytest.approx(expected, abs=1e-6)


def test_push_refuses_a_folder_a_training_run_is_still_writing(tmp_path, capsys):
    import socket

    out = tmp_path / "out"
    out.mkdir()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / LOCK_FILE).write_text(f"{socket.gethostname()} {running.pid}\n")
        with pytest.raises(SystemExit) as exit_info:
            main(["push", str(out), "--hub_model_id", "someone/model"])
    finally:
        running.kill()
        running.wait()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"vit-pipeline: error: {out} is in use by a training run (pid {running.pid}, lock {out / LOCK_FILE}): push it "
        "once that run has finished")


def test_read_only_output_dir_is_one_line_before_anything_loads(tiny_vit, two_digits, small_disk):
    out = small_disk / "out"
    out.mkdir()
    (out / "recipe.yaml").write_text("# an earlier run\n")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        code, line = train("--model_name_or_path", str(tiny_vit), "--dataset_name", str(two_digits), "--output_dir",
                           str(out), *SMALL)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert code == 2
    assert line.startswith(f"vit-pipeline: error: cannot write {out / LOCK_FILE}: Read-only file system ("), line
    assert line.endswith("pick an output_dir you can write to")
    assert sorted(p.name for p in out.iterdir()) == ["recipe.yaml"]
