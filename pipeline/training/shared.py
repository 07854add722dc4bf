"""What both backends share: the result they hand back, and the fine-tuning pieces built from the arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.data.augment import build_train_collator
from pipeline.training.ema import ModelEMA
from pipeline.training.loss import build_loss


@dataclass
class TrainResult:
    """What a backend hands back to the command: metrics (prefixed train_/eval_) and the per-epoch log."""

    train_metrics: dict[str, Any]
    eval_metrics: dict[str, Any]
    log_history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0


@dataclass
class TrainingExtras:
    """Backend-agnostic pieces a training loop takes from the training arguments.

    loss: `compute_loss_func(outputs, labels, num_items_in_batch=None)`, or None for the model's own loss.
    train_collator: collator for training batches (MixUp / CutMix when asked); evaluation keeps the plain one.
    ema: a `ModelEMA` to attach, update after each optimizer step, evaluate and save, or None.
    """

    loss: Any = None
    train_collator: Any = None
    ema: ModelEMA | None = None


def training_extras(args, train_dataset, num_labels: int) -> TrainingExtras:
    """Build the loss, the training collator and the EMA that `args` asks for."""
    return TrainingExtras(
        loss=build_loss(args, train_dataset, num_labels),
        train_collator=build_train_collator(args, num_labels),
        ema=ModelEMA(args.ema_decay) if getattr(args, "ema_decay", 0.0) else None,
    )
