"""What both backends share: the result they hand back, and the fine-tuning pieces built from the arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.data.augment import build_train_collator
from pipeline.training.ema import ModelEMA
from pipeline.training.loss import build_loss

if TYPE_CHECKING:
    from pipeline.config.arguments import PipelineTrainingArguments

# Evaluation entries that are not scores of the model.
SPEED_AND_LOSS = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_epoch")


@dataclass
class TrainResult:
    """What a backend hands back to the command: metrics (prefixed train_/eval_) and the per-epoch log."""

    train_metrics: dict[str, Any]
    eval_metrics: dict[str, Any]
    log_history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0

    @property
    def scores(self) -> dict[str, float]:
        """The final evaluation's metrics without the `eval_` prefix (accuracy, f1, ...), loss and speed left out."""
        return {k[len("eval_"):]: v for k, v in self.eval_metrics.items()
                if k.startswith("eval_") and k not in SPEED_AND_LOSS}


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


def training_extras(args: PipelineTrainingArguments, train_dataset, num_labels: int,
                    multi_label: bool = False) -> TrainingExtras:
    """Build the loss, the training collator and the EMA that `args` asks for (`multi_label`: binary losses)."""
    return TrainingExtras(
        loss=build_loss(args, train_dataset, num_labels, multi_label=multi_label),
        train_collator=build_train_collator(args, num_labels),
        ema=ModelEMA(args.ema_decay) if args.ema_decay else None,
    )


def backend(name: str):
    """The training function of a backend (`trainer` or `accelerate`); both take the same arguments:
    `(model, image_processor, train_dataset, eval_dataset, compute_metrics, args, resume_from_checkpoint=None,
    callbacks=None)` and return a `TrainResult`."""
    if name == "accelerate":
        from pipeline.training.loop import train_with_accelerate

        return train_with_accelerate
    from pipeline.training.trainer import train_with_trainer

    return train_with_trainer
