"""One flow policy for both backends: the Trainer's own `TrainerState`, `TrainerControl` and callbacks.

The Trainer backend gets all of this from `transformers.Trainer`. The Accelerate loop (`training.loop`) builds the same
objects here and calls the same events at the same points of its loop, so:

- when to log, evaluate and save (every N steps, every epoch, at the last step) is decided by transformers'
  `DefaultFlowCallback`, and the loop acts on `control.should_log / should_evaluate / should_save /
  should_training_stop`, as `Trainer._maybe_log_save_evaluate` does;
- any `TrainerCallback` runs unchanged on both backends: `EMACallback`, `EarlyStoppingCallback`, the Hub
  checkpoint pushes of `publish.checkpoints`, and any callback a later feature adds;
- callbacks that are `ExportableState` (early stopping, `TrainerControl`) are saved in `trainer_state.json` with each
  checkpoint and restored on resume (`restore_callback_states_from_checkpoint`), as the Trainer does.

Adding a callback that works on both backends: write a `transformers.TrainerCallback` and pass it in the `callbacks`
list of `train_with_trainer` / `train_with_accelerate` (the `train` command passes its list to whichever backend
runs); for one every run needs, append it in `technique_callbacks` below. Events and their keyword arguments are the
Trainer's: on_train_begin / on_epoch_begin / on_step_begin / on_pre_optimizer_step / on_optimizer_step /
on_substep_end / on_step_end / on_evaluate (metrics=) / on_log (logs=) / on_save / on_epoch_end / on_train_end, each
with `model` (the unwrapped model), `processing_class` (the image processor), `optimizer`, `lr_scheduler`,
`train_dataloader` and `eval_dataloader`. Setting `control.should_training_stop = True` stops either backend after the
current step (a NaN-loss guard); `control.should_save = True` in on_step_end makes it checkpoint that step (a SIGTERM
handler). A callback should only read files from the checkpoint folder in on_save (`args.output_dir` /
`checkpoint-<state.global_step>`), which both backends have finished writing by then.
"""

from __future__ import annotations

import logging

import numpy as np
from transformers import (
    DefaultFlowCallback,
    EarlyStoppingCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from transformers.trainer_callback import CallbackHandler, ExportableState
from transformers.trainer_utils import SaveStrategy

from vit_pipeline import PipelineError

logger = logging.getLogger(__name__)


def technique_callbacks(args, ema=None) -> list[TrainerCallback]:
    """The callbacks the fine-tuning options of `args` need, on either backend: the EMA's and early stopping."""
    from vit_pipeline.training.ema import EMACallback

    callbacks: list[TrainerCallback] = []
    if ema is not None:
        callbacks.append(EMACallback(ema))
    if args.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(args.early_stopping_patience, args.early_stopping_threshold))
    return callbacks


def callback_handler(callbacks: list, model, processing_class, optimizer, lr_scheduler) -> CallbackHandler:
    """A Trainer `CallbackHandler`: `DefaultFlowCallback` first (the Trainer's flow policy), then `callbacks`."""
    return CallbackHandler([DefaultFlowCallback, *callbacks], model, processing_class, optimizer, lr_scheduler)


def new_state(args, handler: CallbackHandler, control: TrainerControl) -> TrainerState:
    """A fresh `TrainerState` that exports the stateful callbacks, as `Trainer.__init__` builds it."""
    return TrainerState(is_local_process_zero=args.local_process_index == 0,
                        is_world_process_zero=args.process_index == 0,
                        stateful_callbacks=stateful(handler, control))


def stateful(handler: CallbackHandler, control: TrainerControl) -> list:
    """The callbacks (and the control) whose state a checkpoint keeps."""
    return [cb for cb in [*handler.callbacks, control] if isinstance(cb, ExportableState)]


def export_callback_states(state: TrainerState, handler: CallbackHandler, control: TrainerControl) -> None:
    """Bring `state.stateful_callbacks` up to date before it is saved, as `Trainer._save_checkpoint` does."""
    state.stateful_callbacks = TrainerState(stateful_callbacks=stateful(handler, control)).stateful_callbacks


def restore_callback_states(args, state: TrainerState, handler: CallbackHandler, control: TrainerControl) -> None:
    """Restore the saved callback states into the live callbacks, as `Trainer._load_callback_state` does.

    Only with `args.restore_callback_states_from_checkpoint` (the Trainer's switch; otherwise early stopping's patience
    counter starts again at 0). The saved attributes are set on the live callbacks (the Trainer builds new ones from
    the saved constructor arguments as well): this run's recipe keeps its own patience and threshold.
    """
    if not args.restore_callback_states_from_checkpoint:
        return
    live = [*handler.callbacks, control]
    missing = []
    for name, saved in state.stateful_callbacks.items():
        saved = saved if isinstance(saved, list) else [saved]
        same_type = [cb for cb in live if type(cb).__name__ == name]
        if not same_type:
            missing.append(name)
        for callback, data in zip(same_type, saved, strict=False):
            # In place: the handler and the loop keep their references.
            for attribute, value in data.get("attributes", {}).items():
                setattr(callback, attribute, value)
    if missing:
        logger.warning("The checkpoint holds states of callbacks this run does not use: %s", ", ".join(missing))


def is_new_best(args, state: TrainerState, metrics: dict) -> bool:
    """Track the best metric in `state` as `Trainer._determine_best_metric` does; True when `metrics` is the best.

    Raises:
        PipelineError: `metric_for_best_model` is not among the evaluation metrics.
    """
    if args.metric_for_best_model is None:
        return False
    key = args.metric_for_best_model
    key = key if key.startswith("eval_") else f"eval_{key}"
    if key not in metrics:
        raise PipelineError(f"metric_for_best_model {args.metric_for_best_model} is not an eval metric: use one "
                            f"of {', '.join(k[5:] for k in metrics if k.startswith('eval_'))}")
    better = np.greater if args.greater_is_better else np.less
    if state.best_metric is None:
        state.best_metric = float("-inf") if args.greater_is_better else float("inf")
    if not better(metrics[key], state.best_metric):
        return False
    state.best_metric = metrics[key]
    if args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST):
        state.best_global_step = state.global_step
    return True
