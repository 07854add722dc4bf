"""The Trainer backend: `transformers.Trainer` owns the loop; this module only wires it up."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import torch
from transformers import PreTrainedModel, Trainer

from vit_pipeline import PipelineError
from vit_pipeline.data.transforms import PixelNormalizer, collate, image_spec
from vit_pipeline.model.inspect import base_model, is_multi_label
from vit_pipeline.training.faults import NonFiniteLossCallback
from vit_pipeline.training.progress import use_readable_progress
from vit_pipeline.training.shared import TrainResult, check_checkpoint
from vit_pipeline.training.tracking import untrack
from vit_pipeline.utils import CHECKPOINT_PREFIX, writing


class PipelineTrainer(Trainer):
    """A Trainer whose checkpoint reloads go through `from_pretrained`, so key conversions apply.

    transformers 5 saves checkpoints in the Hub's original key names (`save_original_format=True`) but the
    Trainer reloads them with a bare `load_state_dict(strict=False)`: for ViT every key mismatches, so resuming
    silently restarts from the initial weights and `load_best_model_at_end` keeps the last weights
    (huggingface/transformers#48805, fix open in #48822). Loading through `from_pretrained` applies the same
    renaming as any other load; a strict `load_state_dict` then proves every weight arrived.

    It also carries the fine-tuning techniques that need the loop (pipeline/finetune.py builds them; each is None
    when unused): an EMA of the weights and a training-only collator (MixUp / CutMix).
    """

    ema = None
    train_collator = None

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
        if self.ema is not None:
            self.ema.load(resume_from_checkpoint)

    def _load_best_model(self):
        if not self._load_converted(self.state.best_model_checkpoint):
            super()._load_best_model()
        if self.ema is not None:
            self.ema.load(self.state.best_model_checkpoint)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if _internal_call and self.ema is not None and self.args.should_save:
            # A checkpoint (`_save_checkpoint` calls this first): the average goes in before the state file that
            # marks the checkpoint complete, as the Accelerate loop writes it.
            self.ema.save(output_dir)

    def training_step(self, model, inputs, num_items_in_batch=None):
        # The one thing a callback cannot see: each micro-batch's loss, for the non-finite-loss stop.
        loss = super().training_step(model, inputs, num_items_in_batch)
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, NonFiniteLossCallback):
                callback.observe(loss)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # A loss hook that reads the batch (the distillation teacher's) gets the training step's pixels, as the
        # Accelerate loop passes them; evaluation calls it without (the label loss alone).
        from vit_pipeline.training.shared import batch_inputs

        hook = self.compute_loss_func
        extra = batch_inputs(hook, inputs.get("pixel_values")) if model.training else {}
        if extra:
            self.compute_loss_func = functools.partial(hook, **extra)
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self.compute_loss_func = hook

    def _save_checkpoint(self, model, trial):
        # A failed write (full disk, read-only folder) is one line; the incomplete checkpoint is removed (it holds
        # the space, and resuming skips it anyway) so the last complete one stays the one to resume from.
        folder = Path(self._get_output_dir(trial=trial)) / f"{CHECKPOINT_PREFIX}-{self.state.global_step}"
        existed = folder.exists()
        try:
            with writing(folder):
                super()._save_checkpoint(model, trial)
        except PipelineError:
            if not existed and self.args.should_save:
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def create_optimizer(self, model=None):
        """Per-part learning rates (layer_decay, backbone_learning_rate) when asked; else the Trainer's optimizer."""
        from vit_pipeline.training.optim import param_groups_for, wants_param_groups

        if self.optimizer is not None or not wants_param_groups(self.args):
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups_for(opt_model, self.args), **optimizer_kwargs)
        return self.optimizer

    # The resumable loader of a training stream (None for map-style data).
    stream_loader = None

    def get_train_dataloader(self):
        from vit_pipeline.training.streaming import is_stream, stream_loader

        if is_stream(self.train_dataset):
            # This process's shards already: no accelerate sharding or dispatching on top (see training.streaming).
            args = self.args
            self.stream_loader = stream_loader(
                self.train_dataset, self._train_batch_size, self.train_collator or self.data_collator,
                args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
                prefetch_factor=args.dataloader_prefetch_factor, drop_last=args.dataloader_drop_last)
            return self.stream_loader
        # MixUp / CutMix apply to training batches only: swap the collator in while the train loader is built.
        if self.train_collator is None:
            return super().get_train_dataloader()
        collator, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = collator

    def _save_rng_state(self, output_dir):
        # Called on every process for every checkpoint: the stream position is per process, like the RNG state.
        super()._save_rng_state(output_dir)
        if self.stream_loader is not None:
            from vit_pipeline.training.streaming import save_stream_state

            save_stream_state(self.stream_loader, output_dir, self.args.process_index)

    def _load_rng_state(self, checkpoint):
        super()._load_rng_state(checkpoint)
        if self.stream_loader is not None and checkpoint:
            from vit_pipeline.training.streaming import load_stream_state

            load_stream_state(self.stream_loader, checkpoint, self.args.process_index)

    def evaluate(self, *args, **kwargs):
        # With EMA, the averaged weights are what is evaluated (and so what picks the best checkpoint).
        if self.ema is None or not self.ema.attached:
            return super().evaluate(*args, **kwargs)
        with self.ema.applied(self.model):
            return super().evaluate(*args, **kwargs)

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

def train_with_trainer(model, image_processor, train_dataset, eval_dataset, compute_metrics, args,
                       resume_from_checkpoint: str | None = None, callbacks: list | None = None) -> TrainResult:
    """Fine-tune with the transformers Trainer, then save the best model and its metrics to `args.output_dir`.

    Evaluates and checkpoints as `args` says (every epoch by default), keeps the best model by
    `args.metric_for_best_model`, and resumes from `resume_from_checkpoint` when given. `callbacks` are extra
    `TrainerCallback`s (the Hub checkpoint pushes of `vit_pipeline.publish.checkpoints`; the Accelerate backend calls
    the same ones, see `training.flow`). Honours the fine-tuning options of `args` (see
    `training.shared.training_extras` and `training.flow.technique_callbacks`): loss, MixUp / CutMix, EMA, per-part
    learning rates, early stopping.
    """
    if resume_from_checkpoint:
        check_checkpoint(resume_from_checkpoint, "trainer")
    from vit_pipeline.training.flow import technique_callbacks
    from vit_pipeline.training.shared import training_extras

    extras = training_extras(args, train_dataset, int(base_model(model).config.num_labels),
                             multi_label=is_multi_label(model), image_processor=image_processor)
    callbacks = [*technique_callbacks(args, extras.ema), *(callbacks or [])]
    trainer = PipelineTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate,
        processing_class=image_processor,
        compute_metrics=compute_metrics,
        compute_loss_func=extras.loss,
        callbacks=callbacks,
    )
    trainer.ema, trainer.train_collator = extras.ema, extras.train_collator
    # A line per evaluation instead of the Trainer's printed dicts (which stay in the log history and trackers).
    use_readable_progress(trainer, args)
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    if extras.ema is not None:
        # The average (of the best checkpoint, with load_best_model_at_end) becomes the saved model.
        extras.ema.copy_to(trainer.model)
    # The best checkpoint's weights are loaded at the end (load_best_model_at_end): save those.
    with writing(args.output_dir):
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
    # The history of the run itself: the final evaluation below re-scores the saved model and is not an epoch.
    log_history = list(trainer.state.log_history)
    # The trackers keep the run as it trained: this re-score of the best checkpoint at the last step would draw a
    # point that no step had (and reopen trackio's finished run, replacing its config).
    untrack(trainer)
    eval_metrics = trainer.evaluate()
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)
    return TrainResult(
        train_metrics=dict(result.metrics),
        eval_metrics=dict(eval_metrics),
        log_history=log_history,
        global_step=trainer.state.global_step,
    )
