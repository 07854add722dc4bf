"""Progress people can read, on both backends: a bar while training, one line per evaluation with the best so far.

The Trainer's `ProgressCallback` (and `PrinterCallback` under `disable_tqdm`) print every log as a Python dict;
`ReadableProgress` takes their place: the training bar shows the loss and learning rate, each evaluation prints one
line (epoch, metrics, best so far), the end of training one summary line. Every value still goes to
`trainer_state.json`'s `log_history` and to the trackers (`report_to`), unchanged. With `disable_tqdm` (logs and CI)
there is no bar: each training log becomes a line with the elapsed time and an ETA instead.
"""

from __future__ import annotations

import logging
import math
import time

from transformers.trainer_callback import PrinterCallback, ProgressCallback

logger = logging.getLogger("vit_pipeline")

# Metrics shown first, in this order; the rest follow alphabetically. Timing values are left to the logs.
FIRST = ("accuracy", "f1", "precision", "recall", "top5_accuracy", "loss")
NOT_SHOWN = ("runtime", "samples_per_second", "steps_per_second", "epoch")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _metrics_text(metrics: dict) -> str:
    names = [k[len("eval_"):] for k, v in metrics.items()
             if k.startswith("eval_") and k[len("eval_"):] not in NOT_SHOWN and isinstance(v, (int, float))]
    names.sort(key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n))
    return ", ".join(f"{name} {metrics['eval_' + name]:.4f}" for name in names)


def _epoch_text(state) -> str:
    epoch, total = state.epoch or 0.0, state.num_train_epochs
    if abs(epoch - round(epoch)) < 1e-6:
        return f"epoch {round(epoch)}/{total}"
    return f"epoch {epoch:.2f}/{total} (step {state.global_step}/{state.max_steps})"


def best_so_far(log_history: list[dict], metric: str | None, greater_is_better: bool | None) -> tuple | None:
    """(value, epoch) of the best evaluation in `log_history` by `metric` (metric_for_best_model), or None."""
    if not metric:
        return None
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    scored = [(entry[key], entry.get("epoch", 0.0)) for entry in log_history
              if isinstance(entry.get(key), (int, float))]
    if not scored:
        return None
    higher = greater_is_better if greater_is_better is not None else not key.endswith("loss")
    # The first of equal scores, as the Trainer keeps the first best checkpoint.
    return (max if higher else min)(scored, key=lambda item: item[0])


def evaluation_line(metrics: dict, state, args, final: bool = False) -> str:
    """One line for an evaluation: where in training it is, its metrics, and the best so far."""
    shown = _metrics_text(metrics)
    if final:
        return f"Saved model (best checkpoint) on the eval set: {shown}"
    line = f"Eval {_epoch_text(state)}: {shown}"
    best = best_so_far(state.log_history, args.metric_for_best_model, args.greater_is_better)
    if best is not None:
        name = args.metric_for_best_model.removeprefix("eval_")
        line += f" | best {name} {best[0]:.4f} (epoch {best[1]:g})"
    return line


class ReadableProgress(ProgressCallback):
    """The Trainer's progress bar without its dict dumps; one readable line per evaluation (see the module doc).

    Args:
        bars: show tqdm bars (training, evaluation); False (disable_tqdm) prints a line per training log instead.
    """

    def __init__(self, bars: bool = True):
        super().__init__()
        self.bars = bars
        self._start = None
        self._start_step = 0
        self._trained = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._start, self._start_step, self._trained = time.time(), state.global_step, False
        if self.bars:
            super().on_train_begin(args, state, control, **kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bars and self.training_bar is not None:
            super().on_step_end(args, state, control, **kwargs)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.bars:
            super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        self._trained = True
        if self.bars and self.training_bar is not None:
            super().on_train_end(args, state, control, **kwargs)

    def _say(self, line: str) -> None:
        from tqdm import tqdm

        # Written above the bars (tqdm redraws them below), to the log like every other line.
        with tqdm.external_write_mode():
            logger.info(line)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.bars:
            super().on_evaluate(args, state, control, **kwargs)  # closes the evaluation bar
        if state.is_world_process_zero and metrics:
            self._say(evaluation_line(metrics, state, args, final=self._trained))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs and "learning_rate" in logs:
            if self.bars and self.training_bar is not None:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['learning_rate']:.3g}",
                                              refresh=False)
                return
            self._say(f"Train {_epoch_text(state)}: loss {logs['loss']:.4f}, learning rate "
                      f"{logs['learning_rate']:.3g}{self._timing(state)}")
        elif "train_runtime" in logs:
            speed = logs.get("train_samples_per_second")
            self._say(f"Trained {state.global_step - self._start_step} steps in {_duration(logs['train_runtime'])}"
                      + (f" ({speed:.1f} images/s)" if speed else "")
                      + (f", mean train loss {logs['train_loss']:.4f}" if "train_loss" in logs else ""))

    def _timing(self, state) -> str:
        done = state.global_step - self._start_step
        if self._start is None or done <= 0 or not state.max_steps:
            return ""
        elapsed = time.time() - self._start
        left = elapsed / done * max(state.max_steps - state.global_step, 0)
        return f" ({_duration(elapsed)} elapsed, ETA {_duration(left)})" if math.isfinite(left) else ""


def use_readable_progress(trainer, args) -> None:
    """Swap a `Trainer`'s default progress callback (bar with dict dumps, or dict printer) for `ReadableProgress`."""
    for callback in list(trainer.callback_handler.callbacks):
        if type(callback) in (ProgressCallback, PrinterCallback):
            trainer.remove_callback(callback)
    trainer.add_callback(ReadableProgress(bars=not args.disable_tqdm))
