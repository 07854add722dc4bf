"""Helpers every layer shares: no import from the rest of the package, no torch at module level.

Each helper lives here once: CPU-core counting, enum unwrapping, results-JSON merging, logging setup, checkpoint
discovery, the "is this a Hub id" rule, the weight-file names, one-line error text.
"""

from __future__ import annotations

import argparse
import enum
import errno
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# What a transformers model folder holds its weights in: safetensors (one file, or shards named by an index), or a
# legacy pickle that `from_pretrained` still loads. Pushes publish the safetensors ones only (and a LoRA adapter's).
SAFE_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
WEIGHT_FILES = (*SAFE_WEIGHT_FILES, "pytorch_model.bin")
ADAPTER_WEIGHT_FILE = "adapter_model.safetensors"
CHECKPOINT_PREFIX = "checkpoint"
CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")
# Written last into a checkpoint by both backends: a checkpoint without it is incomplete.
TRAINER_STATE = "trainer_state.json"


def cpu_count() -> int:
    """Cores this process may use (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def plain(value: Any) -> Any:
    """The value of an enum member (TrainingArguments turns strings into enums), else the value itself."""
    return value.value if isinstance(value, enum.Enum) else value


def one_line(err: BaseException | str) -> str:
    """An error's text on one line (whitespace folded)."""
    return " ".join(str(err).split())


def first_line(err: BaseException) -> str:
    """The first line of an error's text, or its type name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def is_hub_id(name: str | None) -> bool:
    """True for a Hub repo id (`org/name`, or a legacy canonical `name`) that is not a local path (nor a `builtin:`
    dataset). The id rule is the Hub client's own (`huggingface_hub.utils.validate_repo_id`)."""
    if not name or name.startswith(("builtin:", ".", "/", "~")) or Path(name).exists():
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def merge_json(path: str | os.PathLike, extra: dict) -> None:
    """Merge `extra` into the JSON object in `path` (created when missing), as `Trainer.save_metrics` writes it."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(extra)
    path.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")


def save_metrics(output_dir: str | os.PathLike, split: str, metrics: dict) -> None:
    """Write `<split>_results.json` and merge into `all_results.json`, as `Trainer.save_metrics` does."""
    output_dir = Path(output_dir)
    (output_dir / f"{split}_results.json").write_text(json.dumps(metrics, indent=4, sort_keys=True))
    merge_json(output_dir / "all_results.json", metrics)


def checkpoints(output_dir: str | os.PathLike, complete_only: bool = False) -> list[Path]:
    """The `checkpoint-<step>` folders of `output_dir`, by step; with `complete_only`, those holding their state."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)]
    if complete_only:
        found = [p for p in found if (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The last complete checkpoint of `output_dir` (one killed while saving has no state file yet), or None."""
    found = checkpoints(output_dir, complete_only=True)
    return found[-1] if found else None


def setup_logging(is_main: bool = True) -> None:
    """One log format for every command: INFO on the main process, warnings elsewhere; chatty libraries quieted."""
    level = logging.INFO if is_main else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger("vit_pipeline").setLevel(level)
    # The Hub client's HTTP library logs every request at INFO.
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import sys

    # Quiet the libraries a command has loaded (a command that never imports them does not pay for importing them).
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.set_verbosity_warning()
    if not is_main and "datasets" in sys.modules:
        # The datasets progress bars flood multi-process logs; the main process keeps them.
        sys.modules["datasets"].disable_progress_bars()


# What a failed write says: the OS error numbers, and the text torch / safetensors give them when they wrap them.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_WRITE_TEXT = re.compile(r"no space left|storagefull|quota exceeded|read-only file system|permission denied|"
                         r"file too large|failed writing|file write failed|write failed|"
                         # torch.save on a full disk: "[enforce fail at inline_container.cc:672] . unexpected pos ..."
                         r"inline_container\.cc.*unexpected pos", re.IGNORECASE)


def free_space(path: str | os.PathLike) -> str:
    """'3.2 MB free on <folder>' for the disk that holds `path` (its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return f"free space on {folder} unknown"
    for unit in ("bytes", "KB", "MB", "GB"):
        if free < 1024 or unit == "GB":
            break
        free /= 1024
    shown = f"{free:.0f} bytes" if unit == "bytes" else f"{free:.1f} {unit}"
    return f"{shown} free on {folder}"


def write_failure(err: BaseException, path: str | os.PathLike | None = None) -> str | None:
    """One line for an error that is a failed write (no space, no permission, read-only path, file too large).

    Looks through the error and its causes (torch and safetensors wrap the OS error in their own). Returns None for
    any other error.

    Args:
        err: the exception.
        path: what was being written, when the caller knows it better than the error does.
    """
    seen = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
            where = path or cause.filename or "the output folder"
            reason = cause.strerror or os.strerror(cause.errno)
            return f"cannot write {where}: {reason} ({free_space(where)}); {_write_hint(cause.errno)}"
        if _WRITE_TEXT.search(str(cause)) and path is not None:
            # torch.save's own words on a full disk ("[enforce fail at inline_container.cc:672] . unexpected pos")
            # say nothing to a user.
            reason = "the write stopped short" if "inline_container" in str(cause) else first_line(cause)
            return f"cannot write {path}: {reason} ({free_space(path)}); {_write_hint(errno.ENOSPC)}"
        cause = cause.__cause__ or cause.__context__
    return None


def _write_hint(code: int) -> str:
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "pick an output_dir you can write to"
    return "free some space or pick an output_dir on a bigger disk; the last complete checkpoint is kept"


# The lock a training run holds in its output folder ("host pid"): see `vit_pipeline.config.output_dir.OutputDirLock`.
LOCK_FILE = ".vit-pipeline.lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def lock_holder(folder: str | os.PathLike) -> tuple[str, int] | None:
    """The (host, pid) of the run lock in `folder`, or None when there is none or it is unreadable (stale)."""
    try:
        host, pid = (Path(folder) / LOCK_FILE).read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


@contextmanager
def writing(path: str | os.PathLike):
    """Turn a failed write inside the block into a one-line `PipelineError` naming `path` and the free space.

    Other errors pass through unchanged. (`PipelineError` is imported here, not at module level: utils imports
    nothing from the package at import time.)
    """
    try:
        yield
    except Exception as err:
        from vit_pipeline import PipelineError

        message = None if isinstance(err, PipelineError) else write_failure(err, path)
        if message is None:
            raise
        raise PipelineError(message) from err


class OneLineErrors:
    """For argparse parsers (argparse's or `HfArgumentParser`): a usage error raises a one-line `PipelineError` that
    names `PROG --help`, instead of printing the usage and exiting."""

    prog: str

    def error(self, message: str):  # noqa: D102 (argparse hook)
        from vit_pipeline import PipelineError

        raise PipelineError(one_line(f"{message} (see `{self.prog} --help`)"))


class CommandParser(OneLineErrors, argparse.ArgumentParser):
    """An argparse parser for a command's flags whose usage errors are one-line `PipelineError`s."""


def parse_bool(value: str) -> bool:
    """A flag's true / false (1/0, yes/no, on/off), for `type=` of an argparse option."""
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")
