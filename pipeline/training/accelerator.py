"""What the Accelerate backend builds from the arguments: the `Accelerator`, the optimizer, the trackers; and the
sampler-epoch and sharding helpers its loop needs."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration
from torch.utils.data import DataLoader

from vit_pipeline.data.transforms import collate
from vit_pipeline.training.optim import no_decay_names, param_groups_for, wants_param_groups
from vit_pipeline.training.streaming import stream_loader
from vit_pipeline.utils import plain


def build_accelerator(args) -> tuple[Accelerator, list[str]]:
    """The `Accelerator` for the run, and the names of its trackers (`report_to`)."""
    trackers = [name for name in (args.report_to or []) if name != "none"]
    logging_dir = os.environ.get("TENSORBOARD_LOGGING_DIR", os.path.join(args.output_dir, "runs"))
    accelerator = Accelerator(
        # bf16 / fp16 from the recipe, else what `accelerate launch` configured (TrainingArguments reads both).
        mixed_precision=args.mixed_precision or None,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        # The scheduler is stepped once per optimizer step by this loop, as the Trainer does.
        step_scheduler_with_optimizer=False,
        # A seeded sampler shuffles each epoch the same way on every process and after a resume.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.data_seed),
        log_with=[_tracker(name, args, logging_dir) for name in trackers] or None,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir,
            logging_dir=logging_dir,
            save_on_each_node=args.save_on_each_node,
        ),
    )
    return accelerator, trackers


def build_optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    """AdamW with weight decay on weights only (not on biases and norms), as the Trainer builds it.

    With `layer_decay` or `backbone_learning_rate`, the parameter groups of `training.optim.param_groups_for` (each
    with its own learning rate), as the Trainer backend's `PipelineTrainer.create_optimizer`. Frozen weights are left
    out. `optim: adamw_torch_fused` uses torch's fused kernel, `adamw_torch` the multi-tensor (foreach) one.
    """
    if wants_param_groups(args):
        groups = param_groups_for(model, args)
    else:
        skip_decay = no_decay_names(model)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if n not in skip_decay], "weight_decay": args.weight_decay},
            {"params": [p for n, p in params if n in skip_decay], "weight_decay": 0.0},
        ]
    optim = str(plain(args.optim))
    kernel = {"fused": True} if optim == "adamw_torch_fused" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon, **kernel)


def set_epoch(loader, epoch: int) -> None:
    """Make the loader shuffle as in `epoch` (a seeded sampler: a resumed run sees the same order)."""
    loader.set_epoch(epoch)
    # accelerate's set_epoch does not reach a sampler under a skip or shard wrapper: walk down to it.
    node = loader
    for _ in range(6):
        node = getattr(node, "batch_sampler", None)
        if node is None:
            break
        sampler = getattr(node, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def _tracker(name: str, args, logging_dir: str):
    """The Accelerate tracker for `report_to` entry `name`, writing where the Trainer's integration writes.

    TensorBoard: an event folder per run under `output_dir/runs` (named like the Trainer's, date and host); trackio:
    the run `run_name` of the project `project` (the Trainer's fields). Other trackers: accelerate's defaults.
    """
    if name == "tensorboard":
        from accelerate.tracking import TensorBoardTracker
        from transformers.integrations.integration_utils import default_logdir

        return TensorBoardTracker(Path(default_logdir()).name, logging_dir)
    if name == "trackio":
        from accelerate.tracking import TrackioTracker

        return TrackioTracker(args.project, name=args.run_name, space_id=args.trackio_space_id)
    return name


def is_sharded(accelerator) -> bool:
    """True when each process holds only a shard of the weights (FSDP, DeepSpeed ZeRO-3)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = accelerator.state.deepspeed_plugin if accelerator.distributed_type == DistributedType.DEEPSPEED else None
    return plugin is not None and plugin.zero_stage == 3


def fit_deepspeed_config(accelerator: Accelerator, args) -> None:
    """Under DeepSpeed, take the micro batch and clipping from the recipe: DeepSpeed reads the micro batch from the
    loaders it is prepared with (call this once they are), and would clip at 1.0 where its config says "auto"."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    ds_config["train_micro_batch_size_per_gpu"] = args.per_device_train_batch_size
    if ds_config.get("gradient_clipping", "auto") == "auto":
        ds_config["gradient_clipping"] = args.max_grad_norm


def build_loader(args, dataset, batch_size: int, shuffle: bool, collate_fn=collate) -> DataLoader:
    """A map-style dataset's loader, with the Trainer's loader options of `args` (workers, pinning, prefetch)."""
    workers = args.dataloader_num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_fn,
        num_workers=workers,
        pin_memory=args.dataloader_pin_memory,
        persistent_workers=args.dataloader_persistent_workers and workers > 0,
        prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
        drop_last=args.dataloader_drop_last and shuffle,
    )


def build_stream_loader(args, dataset, collate_fn) -> DataLoader:
    """The training stream's resumable loader: not prepared by accelerate (the stream is this process's share
    already); the loop moves its batches to the device."""
    return stream_loader(dataset, args.per_device_train_batch_size, collate_fn or collate,
                         args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
                         prefetch_factor=args.dataloader_prefetch_factor, drop_last=args.dataloader_drop_last)
