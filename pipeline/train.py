"""The Trainer backend: `transformers.Trainer` owns the loop; this module only wires it up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer

from pipeline.transforms import PixelNormalizer, collate, image_spec


class PipelineTrainer(Trainer):
    """A Trainer whose checkpoint reloads go through `from_pretrained`, so key conversions apply.

    transformers 5 saves checkpoints in the Hub's original key names (`save_original_format=True`) but the
    Trainer reloads them with a bare `load_state_dict(strict=False)`: for ViT every key mismatches, so resuming
    silently restarts from the initial weights and `load_best_model_at_end` keeps the last weights
    (huggingface/transformers#48805, fix open in #48822). Loading through `from_pretrained` applies the same
    renaming as any other load; a strict `load_state_dict` then proves every weight arrived.
    """

    def _load_converted(self, checkpoint: str, model=None) -> bool:
        model = self.model if model is None else model
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not isinstance(model, PreTrainedModel):
            return False
        loaded = type(model).from_pretrained(checkpoint, config=model.config)
        model.load_state_dict(loaded.state_dict(), strict=True)
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._load_converted(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        if not self._load_converted(self.state.best_model_checkpoint):
            super()._load_best_model()

    def _prepare_inputs(self, inputs):
        inputs = super()._prepare_inputs(inputs)
        pixel_values = inputs.get("pixel_values")
        if isinstance(pixel_values, torch.Tensor) and pixel_values.dtype == torch.uint8:
            # Fast-path batches arrive as uint8 pixels: the image processor's rescale + normalize run here, once per
            # batch on the model's device, for training and evaluation alike.
            if getattr(self, "_pixel_normalizer", None) is None:
                self._pixel_normalizer = PixelNormalizer(image_spec(self.processing_class)).to(pixel_values.device)
            inputs["pixel_values"] = self._pixel_normalizer(pixel_values)
        return inputs


@dataclass
class TrainResult:
    """What a backend hands back to the command: metrics (prefixed train_/eval_) and the per-epoch log."""

    train_metrics: dict[str, Any]
    eval_metrics: dict[str, Any]
    log_history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0


def train_with_trainer(model, image_processor, train_dataset, eval_dataset, compute_metrics, args,
                       resume_from_checkpoint: str | None = None) -> TrainResult:
    """Fine-tune with the transformers Trainer, then save the best model and its metrics to `args.output_dir`.

    Evaluates and checkpoints as `args` says (every epoch by default), keeps the best model by
    `args.metric_for_best_model`, and resumes from `resume_from_checkpoint` when given.
    """
    trainer = PipelineTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate,
        processing_class=image_processor,
        compute_metrics=compute_metrics,
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    # The best checkpoint's weights are loaded at the end (load_best_model_at_end): save those.
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    eval_metrics = trainer.evaluate()
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)
    return TrainResult(
        train_metrics=dict(result.metrics),
        eval_metrics=dict(eval_metrics),
        log_history=list(trainer.state.log_history),
        global_step=trainer.state.global_step,
    )
