"""Who owns an output folder: a lock holding the running pid, and whether its checkpoints belong to this run.

A run resumes from a folder's last checkpoint only when that checkpoint is of the same run (same model, data and
labels, read from the folder's resolved `recipe.yaml` and the checkpoint's `config.json`); `overwrite_output_dir`
starts over there instead, removing the previous run's checkpoints and outputs once the new run's data and model
have loaded (a run that fails before that leaves the folder as it was).
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import shutil
import socket
from pathlib import Path

import yaml

from vit_pipeline import PipelineError
from vit_pipeline.config.arguments import RECIPE_FILE
from vit_pipeline.utils import LOCK_FILE, WEIGHT_FILES, checkpoints, lock_holder, pid_alive

logger = logging.getLogger("vit_pipeline")

_HELD: list[OutputDirLock] = []
# A lock file younger than this with nothing in it yet is being written by its taker, not left by a dead run.
HALF_WRITTEN_S = 10.0
# Recipe keys that make a checkpoint another run's: what is trained, on what. Hyperparameters may change on resume.
IDENTITY_KEYS = ("model_name_or_path", "from_scratch", "use_peft", "image_size", "dataset_name",
                 "dataset_config_name", "train_dir", "validation_dir", "label_column_name", "train_split")
# What a finished run writes at the top of its folder (removed by overwrite_output_dir, with the checkpoints).
RUN_OUTPUTS = (*WEIGHT_FILES, "config.json", "preprocessor_config.json", "README.md", "training_args.bin",
               "trainer_state.json", "train_results.json", "eval_results.json", "all_results.json", "adapter",
               "test_results.json", "test")


class OutputDirLock:
    """`output_dir/.vit-pipeline.lock` holding `host pid`: a second run into the folder stops with one line.

    A lock whose process is gone (a killed run) is taken over; so is one this process already holds (runs called
    one after another in one Python process). A folder this process holds through another lock object still (compare
    holds each model's folder across its training and measuring) is taken as a nested lock, released by the outer
    one. Released at the end of the run, or when the process exits.
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.folder = Path(output_dir)
        self.path = self.folder / LOCK_FILE
        self.created_folder = False
        self.held = False

    def acquire(self) -> OutputDirLock:
        """Take the lock, creating the folder when needed.

        Raises:
            PipelineError: another live run holds it.
        """
        if any(os.path.abspath(held.path) == os.path.abspath(self.path) for held in _HELD):
            return self  # nested: not held by this object, so its release leaves the outer lock in place
        self.created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_holder()
                # The holder is gone (or is us): take over by removing its lock and trying again.
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me + "\n")
            self.held = True
            _HELD.append(self)
            atexit.register(self.release)
            return self
        raise PipelineError(f"could not take the lock {self.path}: another run keeps taking it; pick another "
                            "output_dir")

    def _check_holder(self) -> None:
        holder = lock_holder(self.folder)
        if holder is None:
            # Created (O_EXCL) but not yet written: another worker taking it this very moment (compare's workers
            # start together), unless it has stayed empty for a while (a run killed in between).
            if _age_seconds(self.path) < HALF_WRITTEN_S:
                raise PipelineError(f"output_dir {self.folder} is being taken by another run (lock {self.path}): "
                                    "wait for it to finish, or pick another output_dir")
            return
        host, pid = holder
        if host != socket.gethostname():
            # Another host's process cannot be checked from here.
            raise PipelineError(f"output_dir {self.folder} is in use by a run on {host} (pid {pid}, lock {self.path}): "
                                "pick another output_dir, or delete the lock file if that run is gone")
        if pid == os.getpid():
            return
        if pid_alive(pid):
            raise PipelineError(f"output_dir {self.folder} is in use by another run (pid {pid}, lock {self.path}): "
                                "wait for it to finish, stop it, or pick another output_dir")
        logger.warning("Taking over the lock of a run that is gone (pid %d) in %s", pid, self.folder)

    def release(self) -> None:
        """Remove the lock (and the folder, when this run created it and left nothing in it)."""
        if not self.held:
            return
        self.held = False
        atexit.unregister(self.release)
        if self in _HELD:
            _HELD.remove(self)
        try:
            if self.path.read_text().split()[-1] == str(os.getpid()):
                self.path.unlink()
            if self.created_folder and not any(self.folder.iterdir()):
                self.folder.rmdir()
        except (OSError, IndexError):
            pass


def releases_locks(command):
    """Decorate a command's `main(argv)`: the output-folder locks it takes are released however it ends."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        held = len(_HELD)
        try:
            return command(*args, **kwargs)
        finally:
            for lock in _HELD[held:][::-1]:
                lock.release()

    return run


def _age_seconds(path: Path) -> float:
    """Seconds since `path` was last written (infinite when it is gone)."""
    import time

    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def try_lock(folder: str | os.PathLike) -> OutputDirLock | None:
    """Lock `folder` for this process, or None when another live run (on this machine or another) holds it."""
    try:
        return OutputDirLock(folder).acquire()
    except PipelineError:
        return None


def lock_output_dir(training_args) -> OutputDirLock | None:
    """Lock `training_args.output_dir` for this run (main process only); None on the other processes."""
    if not training_args.should_save:
        return None
    return OutputDirLock(training_args.output_dir).acquire()


def _previous_recipe(output_dir: Path) -> dict | None:
    path = output_dir / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return recipe if isinstance(recipe, dict) else None


def check_same_run(checkpoint: str | os.PathLike, output_dir: str | os.PathLike, recipe: dict) -> None:
    """Refuse to resume `checkpoint` when the folder's recipe says it is another run (other model or data).

    Raises:
        PipelineError: naming what differs and what to do.
    """
    previous = _previous_recipe(Path(output_dir))
    if previous is None:
        return
    differ = [f"{key}: {previous.get(key)!r} then, {recipe.get(key)!r} now" for key in IDENTITY_KEYS
              if previous.get(key) != recipe.get(key)]
    if differ:
        raise PipelineError(f"{checkpoint} belongs to another run ({'; '.join(differ)}): pick a new output_dir, or "
                            "set overwrite_output_dir: true to start over there")


def check_same_labels(checkpoint: str | os.PathLike, labels: list[str]) -> None:
    """Refuse to resume `checkpoint` when its classifier has other labels than the data.

    Raises:
        PipelineError: naming both label sets and what to do.
    """
    try:
        config = json.loads((Path(checkpoint) / "config.json").read_text())
    except (OSError, ValueError):
        return
    id2label = config.get("id2label") or {}
    try:
        saved = [id2label[str(i)] for i in range(len(id2label))]
    except KeyError:
        return
    if saved != list(labels):
        def show(names: list[str]) -> str:
            return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")

        raise PipelineError(f"{checkpoint} belongs to another run: its labels are [{show(saved)}], the data's are "
                            f"[{show(list(labels))}]; pick a new output_dir, or set overwrite_output_dir: true to "
                            "start over there")


def clear_previous_run(output_dir: str | os.PathLike) -> list[str]:
    """Remove a previous run's checkpoints and outputs from `output_dir` (overwrite_output_dir); other files stay.

    Returns:
        The names removed.
    """
    folder = Path(output_dir)
    removed = []
    for path in [*checkpoints(folder), *(folder / name for name in RUN_OUTPUTS)]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    if removed:
        logger.warning("overwrite_output_dir: removed the previous run's %s from %s", ", ".join(removed), folder)
    return removed
