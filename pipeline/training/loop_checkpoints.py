"""Checkpoints of the Accelerate backend: save (atomically), resume, load the best, save the final outputs.

A mixin of `training.loop.AccelerateRecipe` (it uses the recipe's accelerator, state, control and callbacks). The
files are Trainer-like: `checkpoint-<step>` folders with `trainer_state.json` written last, the model's config and
image processor beside the weights, and `train_results.json` / `eval_results.json` / `all_results.json` at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from transformers import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints, sort_checkpoints

from vit_pipeline.training.ema import EMA_FILE
from vit_pipeline.training.flow import export_callback_states, restore_callback_states
from vit_pipeline.training.shared import TrainResult, check_checkpoint
from vit_pipeline.training.streaming import load_stream_state, save_stream_state
from vit_pipeline.utils import TRAINER_STATE, save_metrics

logger = logging.getLogger("vit_pipeline.training.loop")

WEIGHTS_FILE = "model.safetensors"


class CheckpointsMixin:
    """Save / resume / best-model / final-output methods of `AccelerateRecipe`."""

    def _save_weights_unwrapped(self, models, weights, output_dir) -> None:
        # save_state stores the wrapped model's keys (`module.` under DDP): store the plain model's, so a checkpoint
        # resumes with any number of processes. FSDP and DeepSpeed save their own way (no entries in `weights`).
        for i, model in enumerate(models[: len(weights)]):
            weights[i] = self.accelerator.unwrap_model(model).state_dict()

    def _load_weights_unwrapped(self, models, input_dir) -> None:
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            return
        from safetensors.torch import load_model

        for model in models:
            # Read on the CPU (as accelerate does); load_state_dict copies onto the parameters' own device.
            load_model(self.accelerator.unwrap_model(model), os.path.join(input_dir, WEIGHTS_FILE), device="cpu")
        models.clear()  # loaded: accelerate skips them

    def _resume(self, checkpoint: str) -> None:
        check_checkpoint(checkpoint, "accelerate")
        self.accelerator.load_state(checkpoint)
        if self.stream:
            load_stream_state(self.train_loader, checkpoint, self.accelerator.process_index)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE))
        self.state.is_local_process_zero = self.args.local_process_index == 0
        self.state.is_world_process_zero = self.args.process_index == 0
        restore_callback_states(self.args, self.state, self.callback_handler, self.control)
        if self.state.best_model_checkpoint and not os.path.isdir(self.state.best_model_checkpoint):
            self.state.best_model_checkpoint = None
        if self.ema is not None and not self.ema.load(checkpoint):
            logger.warning("%s has no %s: the weight average starts again from the resumed weights", checkpoint,
                           EMA_FILE)
        max_steps = self.state.max_steps
        self._count_steps(self.num_train_rows)  # the current run's schedule wins over the saved one
        if max_steps != self.state.max_steps:
            logger.info("Resumed run now has %d steps in all (was %d)", self.state.max_steps, max_steps)
        logger.info("Resuming from %s at step %d (epoch %.2f)", checkpoint, self.state.global_step, self.state.epoch)

    def _load_best_model(self) -> None:
        args, state = self.args, self.state
        if not (args.load_best_model_at_end and state.best_model_checkpoint):
            return
        logger.info("Loading the best model from %s (%s %.4f)", state.best_model_checkpoint,
                    args.metric_for_best_model, state.best_metric)
        self.accelerator.load_state(state.best_model_checkpoint)
        if self.ema is not None:
            self.ema.load(state.best_model_checkpoint)
        if args.save_total_limit == 1 and args.should_save:
            # As the Trainer: with one checkpoint allowed, keep the best and drop the last.
            for folder in sort_checkpoints(args.output_dir, best_model_checkpoint=state.best_model_checkpoint):
                if not os.path.samefile(folder, state.best_model_checkpoint):
                    shutil.rmtree(folder, ignore_errors=True)

    def save_checkpoint(self) -> Path:
        """Write `checkpoint-<step>`: model, optimizer, scheduler, RNG and sampler states, and `trainer_state.json`.

        The folder is written under a temporary name and renamed when complete, so a run killed while saving leaves
        no half-written checkpoint for the next run to resume from.
        """
        args, acc, state = self.args, self.accelerator, self.state
        output_dir = Path(args.output_dir)
        final = output_dir / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        partial = output_dir / f"tmp-{final.name}"
        if args.should_save and partial.exists():
            shutil.rmtree(partial)
        acc.wait_for_everyone()
        acc.save_state(str(partial))
        if self.stream:
            partial.mkdir(parents=True, exist_ok=True)
            save_stream_state(self.train_loader, partial, acc.process_index)
        if state.best_global_step:
            best = output_dir / f"{PREFIX_CHECKPOINT_DIR}-{state.best_global_step}"
            if best.exists() or best == final:
                state.best_model_checkpoint = str(best)
        export_callback_states(state, self.callback_handler, self.control)
        acc.wait_for_everyone()
        if args.should_save:
            # As in the Trainer's checkpoints: the config and image processor beside the weights (what the Hub
            # checkpoint pushes publish, and what `from_pretrained` needs).
            acc.unwrap_model(self.model).config.save_pretrained(partial)
            self.image_processor.save_pretrained(partial)
            if self.ema is not None:
                # Part of the checkpoint (before the state file that marks it complete), as the optimizer is.
                self.ema.save(partial)
            state.save_to_json(str(partial / TRAINER_STATE))
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
            rotate_checkpoints(str(output_dir), save_total_limit=args.save_total_limit,
                               best_model_checkpoint=state.best_model_checkpoint)
        acc.wait_for_everyone()
        logger.info("Saved %s", final)
        return final

    def save_outputs(self, train_metrics: dict) -> TrainResult:
        """Save the (best) model, image processor, metrics and state to `output_dir`, then evaluate it once more."""
        args, acc = self.args, self.accelerator
        output_dir = Path(args.output_dir)
        acc.wait_for_everyone()
        if self.ema is not None:
            # The average (of the best checkpoint, with load_best_model_at_end) becomes the saved model.
            self.ema.copy_to(acc.unwrap_model(self.model))
        # Every process takes part: FSDP and DeepSpeed gather the full weights here.
        state_dict = acc.get_state_dict(self.model)
        model = acc.unwrap_model(self.model)
        model.save_pretrained(output_dir, state_dict=state_dict, is_main_process=args.should_save)
        if args.should_save:
            self.image_processor.save_pretrained(output_dir)
            torch.save(args, output_dir / "training_args.bin")
            save_metrics(output_dir, "train", train_metrics)
            self.state.save_to_json(str(output_dir / TRAINER_STATE))
        # The final evaluation re-scores the saved model, as the Trainer backend's `trainer.evaluate()` (callbacks too);
        # as there, the trackers keep the run as it trained (no point at the last step for the best checkpoint).
        self._tracking = False
        eval_metrics = self._evaluate_and_report()
        if args.should_save:
            save_metrics(output_dir, "eval", eval_metrics)
        for split, metrics in (("train", train_metrics), ("eval", eval_metrics)):
            if self.is_world_zero:
                logger.info("***** %s metrics *****\n%s", split, "\n".join(
                    f"  {k:<28}= {v:.4g}" if isinstance(v, float) else f"  {k:<28}= {v}" for k, v in
                    sorted(metrics.items())))
        acc.wait_for_everyone()
        return TrainResult(train_metrics=dict(train_metrics), eval_metrics=dict(eval_metrics),
                           log_history=list(self.state.log_history), global_step=self.state.global_step)
