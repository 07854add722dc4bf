"""The Accelerate backend: a plain PyTorch loop driven by `accelerate.Accelerator`.

Shaped like a torchtune recipe: `setup` builds the loaders, optimizer and scheduler from the arguments (and restores a
checkpoint), `train` runs the loop, `save_checkpoint` writes a resumable `checkpoint-<step>` folder, `save_outputs`
writes the final model and metrics, `cleanup` closes the trackers. It reads the same `PipelineTrainingArguments` as the
Trainer backend and leaves the same files in `output_dir` (`trainer_state.json` with a Trainer-like `log_history`,
`train_results.json`, `eval_results.json`, `all_results.json`), so the card, push and resume code serve both.

Accelerate does the device work: DDP, FSDP or DeepSpeed as `accelerate launch` configures them, mixed precision,
gradient accumulation (`accelerator.accumulate`), sharded loaders, and metrics gathered from every process without the
padded duplicates of the last uneven batch (`gather_for_metrics`).

The flow (when to log, evaluate and save; early stopping; the best checkpoint) is the Trainer's: the loop keeps a
`TrainerState` and a `TrainerControl`, calls a `CallbackHandler` holding `DefaultFlowCallback` and every
`TrainerCallback` of the run at the points the Trainer calls them, and acts on `control.should_*` (see `training.flow`
for how to add a callback that works on both backends).

The fine-tuning techniques come from the same helpers as in the Trainer backend (`training.shared.training_extras`,
`training.flow.technique_callbacks`, `training.optim`): the loss (soft targets, class weights, label smoothing), the
MixUp / CutMix collator for training batches, per-part learning rates, an EMA of the weights (`EMACallback`; evaluated,
kept with the best checkpoint, saved, resumed), and early stopping (transformers' `EarlyStoppingCallback`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from accelerate.utils import send_to_device
from transformers import EvalPrediction, TrainerCallback, TrainerControl, get_scheduler, set_seed
from transformers.integrations.integration_utils import rewrite_logs
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    SaveStrategy,
    enable_full_determinism,
    speed_metrics,
)

from vit_pipeline import PipelineError
from vit_pipeline.data.transforms import PixelNormalizer, image_spec
from vit_pipeline.model.inspect import base_model, is_multi_label
from vit_pipeline.training.accelerator import (
    build_accelerator,
    build_loader,
    build_optimizer,
    build_stream_loader,
    fit_deepspeed_config,
    is_sharded,
    set_epoch,
)
from vit_pipeline.training.faults import NonFiniteLossCallback
from vit_pipeline.training.flow import (
    callback_handler,
    is_new_best,
    new_state,
    technique_callbacks,
)
from vit_pipeline.training.loop_checkpoints import CheckpointsMixin
from vit_pipeline.training.loss import plain_loss
from vit_pipeline.training.progress import ReadableProgress
from vit_pipeline.training.shared import TrainResult, batch_inputs, training_extras
from vit_pipeline.training.streaming import is_stream
from vit_pipeline.utils import writing

logger = logging.getLogger(__name__)


class AccelerateRecipe(CheckpointsMixin):
    """Fine-tune an image classifier with an `accelerate.Accelerator` loop: setup / train / save / cleanup.

    Args:
        args: the `PipelineTrainingArguments` of the run (the same object the Trainer backend reads).
        callbacks: extra `TrainerCallback`s (called as the Trainer calls them; see `training.flow`).
    """

    def __init__(self, args, callbacks: list[TrainerCallback] | None = None):
        self.args = args
        self.callbacks = list(callbacks or [])
        # The one thing a callback cannot see: each micro-batch's loss, for the non-finite-loss stop.
        self.loss_watchers = [c for c in self.callbacks if isinstance(c, NonFiniteLossCallback)]
        if args.full_determinism:
            enable_full_determinism(args.seed)
        else:
            set_seed(args.seed)
        self.accelerator, self.trackers = build_accelerator(args)
        self._tracking = True  # off for the final re-evaluation of the saved model
        # accelerate logs every file of every checkpoint at INFO: keep its warnings only.
        logging.getLogger("accelerate").setLevel(logging.WARNING)
        self.is_world_zero = self.accelerator.is_main_process
        self._flos = 0.0
        self.control = TrainerControl()

    # ---- setup ----------------------------------------------------------------------------------------------------

    def setup(self, model, image_processor, train_dataset, eval_dataset, compute_metrics,
              resume_from_checkpoint: str | None = None) -> None:
        """Build loaders, optimizer and scheduler, prepare them with the accelerator, and restore a checkpoint."""
        args, acc = self.args, self.accelerator
        self.image_processor = image_processor
        self.compute_metrics = compute_metrics
        # Fast-path batches arrive as uint8: the processor's rescale + normalize run once per batch on the device.
        self.normalizer = PixelNormalizer(image_spec(image_processor)).to(self.accelerator.device)
        # A training stream (streaming: true) has no length; its loader is resumable and already this process's.
        self.stream = is_stream(train_dataset)
        self.num_train_rows = None if self.stream else len(train_dataset)
        train_collator = self._setup_techniques(model, image_processor, train_dataset)
        if args.activation_checkpointing:  # `gradient_checkpointing` is its (deprecated) alias
            # As the Trainer calls it: `every_n_layers` and `offload` are the method's own, the rest go to torch.
            kwargs = dict(args.activation_checkpointing_kwargs or {})
            every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None,
                                                  every_n_layers=every_n_layers, offload=offload)
        self._setup_loaders(train_dataset, eval_dataset, train_collator)
        self._count_steps(self.num_train_rows)
        self._setup_optimization(model)
        acc.register_save_state_pre_hook(self._save_weights_unwrapped)
        acc.register_load_state_pre_hook(self._load_weights_unwrapped)
        if resume_from_checkpoint:
            self._resume(resume_from_checkpoint)
        if self.trackers:
            acc.init_trackers(args.run_name or Path(args.output_dir).name, config=args.to_sanitized_dict())

    def _setup_techniques(self, model, image_processor, train_dataset):
        """The loss, the EMA, the callbacks and the `TrainerState`, as the Trainer backend builds them; returns the
        training collator (MixUp / CutMix when asked)."""
        args = self.args
        multi_label = is_multi_label(model)
        extras = training_extras(args, train_dataset, int(base_model(model).config.num_labels),
                                 multi_label=multi_label, image_processor=image_processor)
        # Without a technique that needs it, what the model's own loss computes: cross-entropy (binary for
        # multi-label).
        self.loss_fn = extras.loss or plain_loss(multi_label)
        self.ema = extras.ema
        if self.ema is not None and is_sharded(self.accelerator):
            raise PipelineError("ema_decay needs the full weights on every process: use DDP or DeepSpeed ZeRO-2, or "
                                "set ema_decay: 0")
        # The Trainer's flow policy and every callback of the run (EMA, early stopping, Hub pushes, ...).
        # Progress last, as the Trainer adds its own: a line per evaluation, no printed dicts.
        self.callback_handler = callback_handler([*technique_callbacks(args, self.ema), *self.callbacks,
                                                  ReadableProgress(bars=not args.disable_tqdm)], model,
                                                 image_processor, None, None)
        self.state = new_state(args, self.callback_handler, self.control)
        return extras.train_collator

    def _setup_loaders(self, train_dataset, eval_dataset, train_collator) -> None:
        """The train and eval loaders, prepared by the accelerator (a stream's loader is already this process's)."""
        args, acc = self.args, self.accelerator
        # MixUp / CutMix act on training batches only; evaluation batches keep their hard labels.
        eval_loader = build_loader(args, eval_dataset, args.per_device_eval_batch_size, shuffle=False)
        if self.stream:
            self.train_loader = build_stream_loader(args, train_dataset, train_collator)
            self.eval_loader = acc.prepare(eval_loader)
        else:
            train_loader = build_loader(args, train_dataset, args.per_device_train_batch_size, shuffle=True,
                                        collate_fn=train_collator)
            self.train_loader, self.eval_loader = acc.prepare(train_loader, eval_loader)

    def _setup_optimization(self, model) -> None:
        """The model and optimizer prepared by the accelerator, the scheduler over `state.max_steps`, and the
        callback handler pointed at all of them."""
        args, acc = self.args, self.accelerator
        fit_deepspeed_config(acc, args)
        optimizer = build_optimizer(model, args)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        scheduler = get_scheduler(args.lr_scheduler_type, self.optimizer,
                                  num_warmup_steps=args.get_warmup_steps(self.state.max_steps),
                                  num_training_steps=self.state.max_steps,
                                  scheduler_specific_kwargs=args.lr_scheduler_kwargs or {})
        self.scheduler = acc.prepare(scheduler)
        handler = self.callback_handler
        handler.model = acc.unwrap_model(self.model)
        handler.optimizer, handler.lr_scheduler = self.optimizer, self.scheduler
        handler.train_dataloader, handler.eval_dataloader = self.train_loader, self.eval_loader

    def _count_steps(self, num_train_samples: int | None) -> None:
        """Optimizer steps per epoch and in all, from the per-process loader (the Trainer's arithmetic)."""
        args, state = self.args, self.state
        if self.stream:
            # No length: max_steps bounds the run (`stream_schedule` set it); each pass over the stream is an epoch.
            self.batches_per_epoch = args.max_steps * args.gradient_accumulation_steps
            self.steps_per_epoch = state.max_steps = args.max_steps
            self.num_epochs = args.max_steps
            self.num_train_samples = args.max_steps * self.total_batch_size
            state.num_train_epochs = self.num_epochs
            state.train_batch_size = args.per_device_train_batch_size
            state.compute_steps(args, state.max_steps)
            return
        self.batches_per_epoch = len(self.train_loader)
        accumulation = args.gradient_accumulation_steps
        self.steps_per_epoch = max(math.ceil(self.batches_per_epoch / accumulation), 1)
        if args.max_steps > 0:
            state.max_steps = args.max_steps
            self.num_epochs = math.ceil(args.max_steps / self.steps_per_epoch)
            self.num_train_samples = args.max_steps * self.total_batch_size
        else:
            state.max_steps = math.ceil(args.num_train_epochs * self.steps_per_epoch)
            self.num_epochs = math.ceil(args.num_train_epochs)
            self.num_train_samples = num_train_samples * args.num_train_epochs
        state.num_train_epochs = self.num_epochs
        state.train_batch_size = args.per_device_train_batch_size
        state.compute_steps(args, state.max_steps)

    @property
    def total_batch_size(self) -> int:
        """Images per optimizer step, over all processes."""
        return (self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
                * self.accelerator.num_processes)

    # ---- train ----------------------------------------------------------------------------------------------------

    def train(self) -> dict:
        """Run the loop to `max_steps`: log, evaluate and checkpoint as the arguments say. Returns train metrics.

        The events and decisions are the Trainer's (`Trainer._inner_training_loop`): on_train_begin, then per epoch
        on_epoch_begin, per optimizer step on_step_begin / on_pre_optimizer_step / on_optimizer_step / on_step_end
        (on_substep_end between accumulated batches), on_epoch_end, and on_train_end after the best model is loaded.
        """
        args, acc, state = self.args, self.accelerator, self.state
        start, first_step = time.time(), state.global_step
        first_epoch = state.global_step // self.steps_per_epoch
        skip = 0 if args.ignore_data_skip else (state.global_step % self.steps_per_epoch) * \
            args.gradient_accumulation_steps
        logger.info("Training: %d optimizer steps (%d per epoch), %d images per step, %d process(es) (%s, %s)",
                    state.max_steps, self.steps_per_epoch, self.total_batch_size, acc.num_processes,
                    acc.distributed_type.value, acc.mixed_precision)
        if first_step:
            logger.info("Skipping %d epochs and %d batches to resume at step %d", first_epoch, skip, first_step)
        self._running_loss = torch.zeros((), device=acc.device)
        self._total_loss = 0.0
        self._last_logged = state.global_step
        self._grad_norm = None
        self._event("on_train_begin")
        if args.eval_on_start and not first_step:
            self._evaluate_and_report()
        self.model.train()
        for epoch in range(first_epoch, self.num_epochs):
            self._event("on_epoch_begin")
            step_before = state.global_step
            self._train_epoch(epoch, skip if epoch == first_epoch else 0)
            self._event("on_epoch_end")
            self._maybe_log_save_evaluate()
            if self.control.should_training_stop:
                break
            if self.stream and state.global_step == step_before:
                logger.warning("The training stream yielded no batch in pass %d: stopping at step %d of %d", epoch,
                               state.global_step, state.max_steps)
                break
        if state.global_step < state.max_steps and self.control.should_training_stop:
            logger.info("Training stopped at step %d of %d by a callback (early stopping: %s did not improve by more "
                        "than %g in %s evaluations)", state.global_step, state.max_steps, args.metric_for_best_model,
                        args.early_stopping_threshold, args.early_stopping_patience)
        self._total_loss += acc.reduce(self._running_loss, "mean").item()
        steps = state.global_step - first_step
        metrics = speed_metrics("train", start, num_samples=self.num_train_samples * steps / max(state.max_steps, 1),
                                num_steps=steps)
        self._flos = acc.reduce(torch.tensor(self._flos, device=acc.device, dtype=torch.float64), "sum").item()
        state.total_flos += self._flos
        metrics["total_flos"] = state.total_flos
        metrics["train_loss"] = self._total_loss / max(steps, 1)
        self._log(dict(metrics))
        # As the Trainer's results: total_flos is in the log history, not in train_results.json.
        metrics.pop("total_flos")
        metrics["epoch"] = state.epoch
        self._load_best_model()
        self._event("on_train_end")
        return metrics

    def _event(self, name: str, **kwargs) -> None:
        """Call a `TrainerCallback` event on every callback, as the Trainer does (the control they return wins)."""
        event = getattr(self.callback_handler, name)
        self.control = event(self.args, self.state, self.control, **kwargs)

    def _train_epoch(self, epoch: int, skip_batches: int) -> None:
        args, acc, state = self.args, self.accelerator, self.state
        loader = self.train_loader
        set_epoch(loader, epoch)
        if skip_batches:
            loader = acc.skip_first_batches(loader, skip_batches)
            set_epoch(loader, epoch)
        # The Trainer's estimate: 6 x input values x parameters, per forward + backward.
        flos_per_value = 6 * acc.unwrap_model(self.model).num_parameters(exclude_embeddings=True)
        batch_index = skip_batches - 1
        for batch in loader:
            batch_index += 1
            if self.stream:
                batch = send_to_device(batch, acc.device, non_blocking=args.dataloader_pin_memory)
            if batch_index % args.gradient_accumulation_steps == 0:
                self._event("on_step_begin")
            with acc.accumulate(self.model):
                pixel_values = self.normalizer(batch["pixel_values"])
                outputs = self.model(pixel_values=pixel_values)
                # Hard labels, or the soft targets of MixUp / CutMix (and the batch, for a loss that reads it).
                loss = self.loss_fn(outputs, batch["labels"], **batch_inputs(self.loss_fn, pixel_values))
                for watcher in self.loss_watchers:
                    watcher.observe(loss)
                acc.backward(loss)
                if acc.sync_gradients:
                    if args.max_grad_norm and args.max_grad_norm > 0:
                        self._grad_norm = acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    self._event("on_pre_optimizer_step")
                self.optimizer.step()  # accelerate's wrapper steps only when gradients are synced
                if acc.sync_gradients:
                    self._event("on_optimizer_step")
                self.optimizer.zero_grad()
            self._running_loss += loss.detach() / args.gradient_accumulation_steps
            self._flos += float(flos_per_value * batch["pixel_values"].numel())
            if not acc.sync_gradients:
                self._event("on_substep_end")
                continue
            # The learning rate this step used, before the scheduler moves it on.
            self._learning_rate = self.scheduler.get_last_lr()[0]
            if not acc.optimizer_step_was_skipped:  # fp16 overflow: the step did not happen
                self.scheduler.step()
            state.global_step += 1
            state.epoch = epoch + (batch_index + 1) / self.batches_per_epoch
            # DefaultFlowCallback decides here what this step does (log, evaluate, save, stop at max_steps).
            self._event("on_step_end")
            self._maybe_log_save_evaluate()
            if self.control.should_epoch_stop or self.control.should_training_stop:
                break

    def _maybe_log_save_evaluate(self) -> None:
        """Act on what the callbacks decided, as `Trainer._maybe_log_save_evaluate`: log, evaluate, save."""
        args, state, control = self.args, self.state, self.control
        if control.should_log and state.global_step > self._last_logged:
            self._log_training()
        if control.should_evaluate:
            metrics = self._evaluate_and_report()
            is_best = is_new_best(args, state, metrics)
            if args.save_strategy == SaveStrategy.BEST:
                control.should_save = is_best
        if control.should_save:
            final = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            try:
                with writing(final):
                    self.save_checkpoint()
            except PipelineError:
                # A full disk: the half-written folder goes (it holds the space); the last complete one is kept.
                if args.should_save:
                    shutil.rmtree(final.parent / f"tmp-{final.name}", ignore_errors=True)
                raise
            self._event("on_save")

    def _evaluate_and_report(self) -> dict:
        """Evaluate, log the metrics and call on_evaluate (where early stopping decides), as `Trainer.evaluate`."""
        metrics = self.evaluate()
        self._log(dict(metrics))
        self._event("on_evaluate", metrics=metrics)
        return metrics

    def _log_training(self) -> None:
        state, acc = self.state, self.accelerator
        loss = acc.reduce(self._running_loss, "mean").item()  # mean over processes
        self._running_loss.zero_()
        self._total_loss += loss
        logs = {"loss": loss / (state.global_step - self._last_logged)}
        if self._grad_norm is not None:
            norm = self._grad_norm
            # FSDP2 returns the norm as a DTensor: its full value is the same on every process.
            logs["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        logs["learning_rate"] = getattr(self, "_learning_rate", self.scheduler.get_last_lr()[0])
        self._last_logged = state.global_step
        self._log(logs)

    def _log(self, logs: dict) -> None:
        """Append to `log_history` as the Trainer does (epoch and step added), send to the trackers, call on_log (where
        `ReadableProgress` prints)."""
        state = self.state
        logs["epoch"] = state.epoch
        state.log_history.append({**logs, "step": state.global_step})
        if self.trackers and self._tracking:
            # The Trainer's tracker names (eval_accuracy -> eval/accuracy, loss -> train/loss), from its own helper.
            self.accelerator.log(rewrite_logs({k: v for k, v in logs.items() if isinstance(v, (int, float))}),
                                 step=state.global_step)
        self._event("on_log", logs=logs)


    # ---- evaluate -------------------------------------------------------------------------------------------------

    def evaluate(self) -> dict:
        """Evaluate on the eval loader, gathering predictions from every process; returns `eval_`-prefixed metrics."""
        acc = self.accelerator
        start = time.time()
        self.model.eval()
        logits_all, labels_all, losses_all = [], [], []
        # With EMA, the averaged weights are what is evaluated (and so what picks the best checkpoint).
        averaged = self.ema.applied(acc.unwrap_model(self.model)) if self.ema is not None and self.ema.attached \
            else contextlib.nullcontext()
        with averaged, torch.no_grad():
            for batch in self.eval_loader:
                outputs = self.model(pixel_values=self.normalizer(batch["pixel_values"]))
                logits = outputs.logits.float()
                # The training loss (class weights, label smoothing) on hard labels, per sample: exact means below.
                losses = self.loss_fn.per_sample(outputs, batch["labels"])
                # gather_for_metrics drops the samples repeated to fill the last batch of every process.
                logits, labels, losses = acc.gather_for_metrics((logits, batch["labels"], losses))
                logits_all.append(logits.cpu())
                labels_all.append(labels.cpu())
                losses_all.append(losses.cpu())
        self.model.train()
        logits, labels = torch.cat(logits_all).numpy(), torch.cat(labels_all).numpy()
        metrics = {"eval_loss": float(torch.cat(losses_all).mean())}
        computed = self.compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
        metrics.update({k if k.startswith("eval_") else f"eval_{k}": v for k, v in computed.items()})
        metrics.update(speed_metrics("eval", start, num_samples=len(labels), num_steps=len(self.eval_loader)))
        metrics["epoch"] = self.state.epoch
        return metrics

    # ---- save -----------------------------------------------------------------------------------------------------


    def cleanup(self) -> None:
        """Close the trackers (also after an error: no collective call here, another process may be gone)."""
        # Not accelerator.end_training(): it also destroys the process group, which the command still needs.
        for tracker in self.accelerator.trackers:
            tracker.finish()



def train_with_accelerate(model, image_processor, train_dataset, eval_dataset, compute_metrics, args,
                          resume_from_checkpoint: str | None = None, callbacks: list | None = None) -> TrainResult:
    """Fine-tune with a plain Accelerate loop, then save the best model and its metrics to `args.output_dir`.

    Same contract as `training.trainer.train_with_trainer`: evaluates and checkpoints as `args` says (every epoch by
    default), keeps the best model by `args.metric_for_best_model`, resumes from `resume_from_checkpoint` when given
    (model, optimizer, scheduler, RNG, position in the data, EMA), honours the fine-tuning options of `args` (loss,
    MixUp / CutMix, EMA, per-part learning rates, early stopping), and only the main process writes files.

    `callbacks` are extra `TrainerCallback`s, called where the Trainer calls them (the Hub checkpoint pushes of
    `vit_pipeline.publish.checkpoints`, or any other; see `training.flow`).

    Raises:
        PipelineError: `resume_from_checkpoint` is not a checkpoint of this backend.
    """
    recipe = AccelerateRecipe(args, callbacks)
    recipe.setup(model, image_processor, train_dataset, eval_dataset, compute_metrics,
                 resume_from_checkpoint=resume_from_checkpoint)
    try:
        train_metrics = recipe.train()
        with writing(args.output_dir):
            return recipe.save_outputs(train_metrics)
    finally:
        recipe.cleanup()
