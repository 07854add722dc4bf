"""Checks on argument values that run before any data or weights load: a number in its range, an output folder that
can be one, the options the Accelerate loop implements, the trackers `report_to` names. Each failure is one line."""

from __future__ import annotations

import math
import os
from pathlib import Path

from vit_pipeline import PipelineError
from vit_pipeline.utils import plain


def check_range(args, name: str, low: float, high: float = math.inf, *, low_open: bool = False,
                high_open: bool = False, allow_none: bool = False, hint: str = "") -> None:
    """Raise a one-line `PipelineError` naming `name` unless `args.<name>` is a finite number in the range.

    Args:
        args: the dataclass holding the field.
        name: the field (recipe key).
        low, high: the bounds; `low_open` / `high_open` exclude them.
        allow_none: None (unset) passes.
        hint: appended to the message (what the value means, what to set).
    """
    value = vars(args)[name]
    if value is None and allow_none:
        return
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and (value < high if high_open else value <= high))
    if ok:
        return
    def show(bound: float) -> str:
        return f"{bound:g}" if isinstance(bound, float) else str(bound)

    if high == math.inf:
        wanted = f"{'>' if low_open else '>='} {show(low)}"
    else:
        wanted = f"in {'(' if low_open else '['}{show(low)}, {show(high)}{')' if high_open else ']'}"
    raise PipelineError(f"{name} must be {wanted} (got {value}){hint}")


def check_output_dir(output_dir: str | None) -> None:
    """Refuse an output_dir that is, or sits inside, an existing file (before anything loads)."""
    if not output_dir:
        return
    path = Path(output_dir)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is" if folder == path else f"is inside {folder}, which is"
                raise PipelineError(f"output_dir {output_dir} {where} an existing file: pick a folder path")
            return


# Optimizers the Accelerate loop builds (torch AdamW; the fused kernel where torch has one for the device).
ACCELERATE_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


def check_accelerate_options(args) -> None:
    """Reject options the Accelerate loop does not implement, before any data or weights are loaded."""
    optim = str(plain(args.optim))
    if optim not in ACCELERATE_OPTIMIZERS:
        raise PipelineError(f"optim {optim} is not available with --backend accelerate: use one of "
                            f"{', '.join(ACCELERATE_OPTIMIZERS)}, or --backend trainer")
    if args.torch_compile:
        raise PipelineError("torch_compile is not available with --backend accelerate: use --backend trainer, or "
                            "set dynamo_config in the accelerate launch config")
    sharded = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" or (
        os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
        and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")
    if args.ema_decay and sharded:
        # The average is a full copy of the model on every process; FSDP and ZeRO-3 keep only a shard there.
        raise PipelineError("ema_decay is not available with FSDP or DeepSpeed ZeRO-3 and --backend accelerate: use "
                            "DDP or ZeRO-2, or set ema_decay: 0")
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import LoggerType

    # Built-in trackers whose package is missing are dropped by accelerate without a word: say so instead.
    missing = set(LoggerType.list()) - {str(t) for t in get_available_trackers()}
    for name in args.report_to or []:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise PipelineError(f"report_to {name} has no Accelerate tracker: use one of "
                                f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}, or --backend trainer")
        if name in missing or (name in TRACK_EXTRA and not _tracker_installed(name)):
            raise PipelineError(_missing_tracker(name))


# The trackers the `track` extra installs, and the modules each can write with.
TRACK_EXTRA = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",)}


def _tracker_installed(name: str) -> bool:
    import importlib.util

    return any(importlib.util.find_spec(module) is not None for module in TRACK_EXTRA[name])


def _missing_tracker(name: str) -> str:
    if name in TRACK_EXTRA:
        return f"report_to {name} needs the track extra: pip install 'vit-pipeline[track]'"
    return f"report_to {name}: the {name} package is not installed (pip install {name})"


def check_trainer_trackers(report_to: list[str]) -> None:
    """Reject a `report_to` the Trainer has no integration for, or whose package is missing, before any loading."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

    available = None
    for name in report_to or []:
        if name not in INTEGRATION_TO_CALLBACK:
            raise PipelineError(f"report_to {name} is not a Trainer integration: use one of "
                                f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))} (or none)")
        if name in TRACK_EXTRA:
            if not _tracker_installed(name):
                raise PipelineError(_missing_tracker(name))
            continue
        available = get_available_reporting_integrations() if available is None else available
        if name not in available:
            raise PipelineError(_missing_tracker(name))
