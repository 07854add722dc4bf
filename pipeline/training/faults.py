"""Faults during training, as `TrainerCallback`s that run on both backends: a loss that is not finite, a signal.

Both stop the run with a `RunStopped` (a `PipelineError`: one line, its own exit status) and never save weights that
are not finite, so the last complete checkpoint stays the last good one and the same command resumes from it.

The loss is the one thing a callback does not see: each backend hands every step's training loss to
`NonFiniteLossCallback.observe` (`PipelineTrainer.training_step`, the Accelerate loop's step).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
from collections.abc import Iterator

import torch
from transformers import TrainerCallback

from vit_pipeline import PipelineError
from vit_pipeline.utils import last_checkpoint

logger = logging.getLogger("vit_pipeline")

SIGNAL_EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130}


class RunStopped(PipelineError):
    """The run stopped on purpose (a diverged loss, a signal): one line, and the exit status it carries."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def _shown(loss: float) -> str:
    return str(loss) if not math.isfinite(loss) else "not finite on another process"


def _kept(output_dir: str) -> str:
    last = last_checkpoint(output_dir)
    if last is None:
        return "no checkpoint was saved before it"
    # Resuming restores the optimizer and scheduler, learning rates included: a new learning_rate needs a new start.
    return (f"the last checkpoint before it, {last.name}, is kept (resuming keeps its learning rate: for a new one, "
            "set overwrite_output_dir: true)")


class NonFiniteLossCallback(TrainerCallback):
    """Stop at the first step whose training loss is NaN or infinite, before anything is saved.

    The Trainer's `logging_nan_inf_filter` hides such a loss from the logs while the weights turn NaN; this stops
    the run at that step instead, with what to try. Weights are also checked before each save, so a checkpoint
    never holds non-finite weights (a finite loss can still blow them up).
    """

    def __init__(self):
        self._bad: torch.Tensor | None = None
        self._value: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor) -> None:
        """Record one micro-batch's training loss (kept on its device: read once per optimizer step)."""
        loss = loss.detach().float().reshape(-1)[:1]
        bad = ~torch.isfinite(loss)
        if self._bad is None:
            self._bad, self._value = bad, loss
        else:
            # The first non-finite value of the step is the one reported.
            self._value = torch.where(self._bad, self._value, loss)
            self._bad = self._bad | bad

    def on_step_end(self, args, state, control, model=None, **kwargs):
        bad, value = self._bad, self._value
        self._bad = self._value = None
        if bad is None:
            bad, value = torch.zeros(1, dtype=torch.bool, device=args.device), torch.zeros(1, device=args.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            # Every process stops at the same step (one that stopped alone would leave the others waiting in their
            # next all-reduce).
            flag = bad.to(torch.int32)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            bad = flag.bool()
        if bool(bad.item()):
            raise RunStopped(
                f"training loss is {_shown(value.item())} at step {state.global_step} (epoch {state.epoch:.2f}): the "
                "run stopped there, before saving anything of it; try a lower learning_rate (now "
                f"{args.learning_rate:g}), bf16 instead of fp16, or max_grad_norm 1.0 (now {args.max_grad_norm:g}); "
                f"{_kept(args.output_dir)}")
        if control.should_save:
            self._check_weights(args, state, model)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if control.should_save:
            self._check_weights(args, state, model)
        return control

    def _check_weights(self, args, state, model) -> None:
        if model is None:
            return
        params = [p.detach() for p in model.parameters() if p.is_floating_point()]
        if params and not all(bool(torch.isfinite(p).all()) for p in params):
            raise RunStopped(
                f"the weights are no longer finite at step {state.global_step} (epoch {state.epoch:.2f}), before "
                f"saving them: the run stopped without saving them; try a lower learning_rate (now "
                f"{args.learning_rate:g}), bf16 instead of fp16, or max_grad_norm 1.0; {_kept(args.output_dir)}")


class StopOnSignal(TrainerCallback):
    """SIGTERM (a cluster's preemption) and SIGINT (Ctrl-C): save a checkpoint at the next step boundary and stop.

    The evaluation that step was due is skipped, so the stop takes at most one step plus the save. The run then
    raises `RunStopped` with exit status 143 (SIGTERM) or 130 (SIGINT); the same command resumes at that step. A
    second Ctrl-C stops at once (checkpoints already written are kept). Handlers are installed for the training
    loop only (main thread), and do nothing in forked loader workers, which inherit them.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:
            return  # a loader worker: the main process stops the run
        if self.received is not None and signum == signal.SIGINT:
            self.restore()
            raise KeyboardInterrupt
        self.received = signum
        logger.warning("Received %s: saving a checkpoint at the end of this step, then stopping",
                       signal.Signals(signum).name)

    def restore(self) -> None:
        """Put back the signal handlers the run found (also when it failed before `on_train_end`)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            for signum in SIGNAL_EXIT:
                self._previous[signum] = signal.signal(signum, self._handle)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.received is None:
            return control
        self.restore()
        name = signal.Signals(self.received).name
        raise RunStopped(f"stopped by {name} at step {state.global_step}: saved checkpoint-{state.global_step} in "
                         f"{args.output_dir}; run the same command to resume from step {state.global_step}",
                         exit_code=SIGNAL_EXIT[self.received])

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()
        return control


@contextlib.contextmanager
def fault_callbacks() -> Iterator[list[TrainerCallback]]:
    """The callbacks every training run gets, on either backend; on leaving, however the run ended, the process's
    own signal handlers are back (a run that raised never reached `on_train_end`: in a notebook or `search`'s
    in-process trials, SIGTERM and Ctrl-C would otherwise only log "Received ...")."""
    # StopOnSignal first: it asks for the save that NonFiniteLossCallback then checks the weights for.
    stop_on_signal = StopOnSignal()
    try:
        yield [stop_on_signal, NonFiniteLossCallback()]
    finally:
        stop_on_signal.restore()
