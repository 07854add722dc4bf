"""Exponential moving average of the weights, on `torch.optim.swa_utils.AveragedModel` with
`get_ema_multi_avg_fn` (PyTorch's maintained implementation).

`ModelEMA` is backend-agnostic (attach, update after each optimizer step, swap in to evaluate, copy in to save,
save / load with a checkpoint). `EMACallback` drives it from either backend (both call `TrainerCallback` events):
attach when training begins, update after every optimizer step. Saving the average with a checkpoint, and loading it
on resume or with the best checkpoint, is each backend's own checkpoint code (before the state file that marks the
checkpoint complete, so a run killed while saving never leaves a checkpoint without its average).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

EMA_FILE = "ema.safetensors"


class ModelEMA:
    """An exponential moving average of a model's weights (and buffers).

    Args:
        decay: weight of the old average at each update (0.9998 averages over roughly the last 5,000 steps).
    """

    def __init__(self, decay: float):
        self.decay = decay
        self.averaged = None
        self._pending: dict[str, torch.Tensor] | None = None

    def attach(self, model: nn.Module) -> None:
        """Start averaging `model` (a copy on the model's device), restoring a loaded state if there is one."""
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        self.averaged.requires_grad_(False)
        if self._pending is not None:
            self.averaged.load_state_dict(self._pending)
            self._pending = None

    @property
    def attached(self) -> bool:
        return self.averaged is not None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        self.averaged.update_parameters(model)

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights, under the model's own state-dict names."""
        return self.averaged.module.state_dict()

    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the average (before saving the final model)."""
        model.load_state_dict(self.weights())

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Swap the average into `model` for the duration of the block (to evaluate it), then restore the weights."""
        backup = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.weights())
        try:
            yield model
        finally:
            model.load_state_dict(backup)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the average (and its update count) as `ema.safetensors` in `folder`."""
        from safetensors.torch import save_file

        path = Path(folder) / EMA_FILE
        state = {name: value.detach().contiguous().cpu() for name, value in self.averaged.state_dict().items()}
        save_file(state, str(path))
        return path

    def load(self, folder: str | os.PathLike) -> bool:
        """Load `ema.safetensors` from `folder` (now if attached, else at `attach`). Returns whether one was there."""
        from safetensors.torch import load_file

        path = Path(folder) / EMA_FILE
        if not path.is_file():
            return False
        state = load_file(str(path))
        if self.attached:
            device = next(self.averaged.parameters()).device
            self.averaged.load_state_dict({k: v.to(device) for k, v in state.items()})
        else:
            self._pending = state
        return True


class EMACallback(TrainerCallback):
    """`TrainerCallback` hooks for `ModelEMA` (both backends): attach at the start, update after each optimizer step."""

    def __init__(self, ema: ModelEMA):
        self.ema = ema

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # The Trainer has moved the model to its device by now: the average lives beside it.
        self.ema.attach(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(model)
