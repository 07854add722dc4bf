"""What both backends share: the result they hand back, and the fine-tuning pieces built from the arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vit_pipeline import PipelineError
from vit_pipeline.data.augment import build_train_collator
from vit_pipeline.training.ema import ModelEMA
from vit_pipeline.training.loss import build_loss
from vit_pipeline.utils import TRAINER_STATE

if TYPE_CHECKING:
    from vit_pipeline.config.training_args import PipelineTrainingArguments

# The optimizer state file each backend writes into its checkpoints (`accelerator.save_state` / the Trainer).
OPTIMIZER_FILES = {"accelerate": "optimizer.bin", "trainer": "optimizer.pt"}
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
                    multi_label: bool = False, image_processor=None) -> TrainingExtras:
    """Build the loss, the training collator and the EMA that `args` asks for (`multi_label`: binary losses).

    With `teacher_model_name_or_path`, the loss is a `training.distillation.DistillationLoss` around the label loss:
    the frozen teacher (its view of the batch made from the student's `image_processor`) sits behind the loss hook.
    """
    loss = build_loss(args, train_dataset, num_labels, multi_label=multi_label)
    if args.teacher_model_name_or_path:
        from vit_pipeline.training.distillation import build_distillation
        from vit_pipeline.training.loss import plain_loss

        loss = build_distillation(args, loss or plain_loss(multi_label), image_processor, multi_label=multi_label)
    return TrainingExtras(
        loss=loss,
        train_collator=build_train_collator(args, num_labels),
        ema=ModelEMA(args.ema_decay) if args.ema_decay else None,
    )


def batch_inputs(loss, pixel_values) -> dict:
    """What a training step passes to the loss hook besides outputs and labels: the batch's pixels, for a loss that
    reads the batch (`reads_batch`, the distillation teacher's), else nothing."""
    return {"pixel_values": pixel_values} if getattr(loss, "reads_batch", False) else {}


def backend(name: str):
    """The training function of a backend (`trainer` or `accelerate`); both take the same arguments:
    `(model, image_processor, train_dataset, eval_dataset, compute_metrics, args, resume_from_checkpoint=None,
    callbacks=None)` and return a `TrainResult`."""
    if name == "accelerate":
        from vit_pipeline.training.loop import train_with_accelerate

        return train_with_accelerate
    from vit_pipeline.training.trainer import train_with_trainer

    return train_with_trainer


def check_checkpoint(path: str | os.PathLike, backend: str) -> None:
    """Raise a `PipelineError` unless `path` is a complete checkpoint `backend` can resume from.

    A checkpoint resumes only on the backend that wrote it (their optimizer, scheduler and RNG files differ).
    """
    path = Path(path)
    other = next(name for name in OPTIMIZER_FILES if name != backend)
    if (path / OPTIMIZER_FILES[other]).exists() and not (path / OPTIMIZER_FILES[backend]).exists():
        raise PipelineError(f"{path} was written by the {other} backend: resume it with --backend {other}, or pick "
                            f"a new output_dir to start over with --backend {backend}")
    if not (path / TRAINER_STATE).exists():
        raise PipelineError(f"{path} is not a complete checkpoint (no {TRAINER_STATE}): delete it to resume from the "
                            "one before, or pick a new output_dir")
