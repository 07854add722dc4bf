"""Checkpoint pushes while training (hub strategies every_save, checkpoint, all_checkpoints), on a background thread."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from vit_pipeline.publish.push import (
    ATTEMPTS_ENV,
    BACKOFF_ENV,
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    MODEL_FILES,
    STRATEGIES,
    PushResult,
    _checkpoint_files,
    _commit,
    _env_number,
    _weights_of,
    _with_retries,
    check_push_options,
    explain,
)
from vit_pipeline.utils import plain

logger = logging.getLogger("vit_pipeline.publish.push")


class CheckpointPusher:
    """Pushes checkpoints while training (hub strategies every_save, checkpoint, all_checkpoints), in order, on one
    background thread, so training does not wait for uploads.

    Each save is staged first (hard links, else copies, in a hidden folder of the output folder) because the
    Trainer may delete the checkpoint folder (save_total_limit) before its upload ends. A failed checkpoint push
    is logged and training goes on: the final push still publishes the finished run.
    """

    def __init__(self, output_dir: str | os.PathLike, repo_id: str, token: str, *, strategy: str,
                 private: bool = False, revision: str | None = None):
        if strategy not in STRATEGIES[1:]:
            raise ValueError(f"no checkpoint pushes for hub_strategy {strategy}")
        self.output_dir = Path(output_dir)
        self.repo_id = repo_id
        self._token = token
        self.strategy = strategy
        self.private = private
        self.revision = revision or "main"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-push")
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self.pushed: list[PushResult] = []
        self.failed: list[str] = []

    def __repr__(self) -> str:  # never shows the token
        return f"CheckpointPusher({self.repo_id!r}, strategy={self.strategy!r})"

    def _files(self, checkpoint: Path) -> dict[str, Path]:
        files = {name: checkpoint / name for name in MODEL_FILES if (checkpoint / name).is_file()}
        files.update({name: checkpoint / name for name in _weights_of(checkpoint) if (checkpoint / name).is_file()})
        if self.strategy == "checkpoint":
            files.update(_checkpoint_files(checkpoint, "last-checkpoint"))
        elif self.strategy == "all_checkpoints":
            files.update(_checkpoint_files(checkpoint, checkpoint.name))
        return files

    def _stage(self, files: dict[str, Path]) -> tuple[Path, dict[str, Path]]:
        staging = Path(tempfile.mkdtemp(prefix=".hub-push-", dir=self.output_dir))
        staged = {}
        for i, (path, source) in enumerate(files.items()):
            target = staging / f"{i:04d}-{source.name}"
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
            staged[path] = target
        return staging, staged

    def submit(self, checkpoint: str | os.PathLike, step: int, epoch: float | None = None) -> Future | None:
        """Queue the push of a checkpoint folder the Trainer just saved."""
        checkpoint = Path(checkpoint)
        if not checkpoint.is_dir():
            logger.warning("Hub push skipped: checkpoint %s is gone", checkpoint)
            return None
        staging, staged = self._stage(self._files(checkpoint))
        message = f"Training in progress, step {step}" + (f" (epoch {epoch:g})" if epoch is not None else "")
        future = self._executor.submit(self._push, staging, staged, message, checkpoint.name)
        with self._lock:
            self._pending.append(future)
        return future

    def _push(self, staging: Path, staged: dict[str, Path], message: str, name: str) -> None:
        from huggingface_hub import HfApi

        api = HfApi()
        try:
            full_id, info = _with_retries(
                lambda: _commit(api, self.repo_id, staged, token=self._token, private=self.private,
                                revision=self.revision, commit_message=message, replace_weights=False),
                attempts=max(1, int(_env_number(ATTEMPTS_ENV, DEFAULT_ATTEMPTS))),
                backoff=_env_number(BACKOFF_ENV, DEFAULT_BACKOFF), what=f"push of {name}")
            self.repo_id = full_id
            self.pushed.append(PushResult(full_id, self.revision, info.commit_url, info.oid, sorted(staged)))
            logger.info("Pushed %s to %s (commit %s)", name, full_id, info.oid[:8])
        except Exception as err:  # noqa: BLE001 - a checkpoint push never stops training
            line = explain(err, self.output_dir, self.repo_id, private=self.private, revision=self.revision,
                           token=self._token)
            self.failed.append(name)
            logger.warning("Hub push of %s failed, training goes on: %s", name, line)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def wait(self) -> None:
        """Block until every queued push has finished (done or failed)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Wait for the queued pushes, then stop the thread."""
        self.wait()
        self._executor.shutdown(wait=True)


def checkpoint_callbacks(training_args, token: str) -> list:
    """Trainer callbacks that push checkpoints as `training_args.hub_strategy` says (none for `end`)."""
    strategy = str(plain(training_args.hub_strategy))
    if strategy == "end" or not training_args.should_save:
        return []
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    pusher = CheckpointPusher(training_args.output_dir, training_args.hub_model_id, token, strategy=strategy,
                              private=bool(training_args.hub_private_repo), revision=training_args.hub_revision)

    class HubCheckpointCallback(TrainerCallback):
        """Hands each saved checkpoint to a `CheckpointPusher`; waits for the uploads when training ends."""

        def __init__(self):
            self.pusher = pusher

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
                pusher.submit(folder, state.global_step, state.epoch)

        def on_train_end(self, args, state, control, **kwargs):
            # The final push (best model and card) must come after the checkpoint pushes, not race them.
            pusher.close()

    return [HubCheckpointCallback()]


def prepare_push(training_args, token: str | None) -> tuple[str, list]:
    """Checks for `train --push_to_hub`, before any data or weights are loaded.

    Returns:
        The token to push with, and the Trainer callbacks of the hub strategy.
    """
    strategy = str(plain(training_args.hub_strategy))
    token = check_push_options(training_args.hub_model_id, token, strategy=strategy,
                               output_dir=training_args.output_dir, private=bool(training_args.hub_private_repo),
                               revision=training_args.hub_revision)
    return token, checkpoint_callbacks(training_args, token)
