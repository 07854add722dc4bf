"""What the arguments take from the machine and the data: loader workers and precision by default, the schedule of a
stream, and the one-line summary of the speed settings."""

from __future__ import annotations

import os

from vit_pipeline import PipelineError
from vit_pipeline.utils import cpu_count, plain


def _default_workers() -> int:
    # Decoding and augmenting images is CPU work: give the loader the cores this process can use, leaving one
    # for the training loop itself, and share them between the processes of a multi-process launch.
    cores = cpu_count()
    local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    # Up to 16: a worker decodes and crops about 700 ImageNet-sized photos/s, and one GPU can take 3,000+.
    return max(0, min(16, cores // local_procs - 1))


def fit_workers_to_data(training_args, pixel_cache: bool) -> None:
    """With the pixel cache and no accelerator, train in the loading process: no loader worker unless one was asked.

    The cache's batch path (`vit_pipeline.data.batches`) costs a few percent of a CPU step; a worker process doing it
    instead takes a core from the model's torch threads (on 2 cores: both threads contend with it). With a GPU the
    workers stay (the host's cores are free while the GPU computes).
    """
    if not pixel_cache or not getattr(training_args, "_workers_from_machine", False):
        return
    if _has_accelerator() or training_args.dataloader_num_workers == 0:
        return
    training_args.dataloader_num_workers = 0
    training_args.dataloader_persistent_workers = False


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _auto_precision(use_cpu: bool) -> tuple[bool, bool]:
    """(bf16, fp16) for this machine: bf16 where the GPU has it, fp16 on older GPUs, fp32 on CPU.

    A launcher's choice (`accelerate launch --mixed_precision ...`) wins over the hardware.
    """
    import torch

    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher in ("bf16", "fp16", "no"):
        return launcher == "bf16", launcher == "fp16"
    if use_cpu or not torch.cuda.is_available():
        return False, False
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return bf16, not bf16


def images_per_step(training_args) -> int:
    """Training images in one optimizer step, over every process."""
    return (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
            * training_args.world_size)


def planned_steps(training_args, train_rows: int) -> int:
    """The optimizer steps a map-style run takes: `max_steps`, else `num_train_epochs` over `train_rows` as the
    Trainer counts them (the last, partial batch of an epoch is a step)."""
    import math

    if training_args.max_steps > 0:
        return training_args.max_steps
    batches = math.ceil(train_rows / (training_args.per_device_train_batch_size * training_args.world_size))
    per_epoch = max(1, batches // training_args.gradient_accumulation_steps)
    return math.ceil(per_epoch * training_args.num_train_epochs)


def planned_epochs(training_args, train_rows: int) -> float:
    """How many times the run reads each training image (epochs, from `max_steps` when it bounds the run)."""
    if training_args.max_steps <= 0:
        return float(training_args.num_train_epochs)
    return training_args.max_steps * images_per_step(training_args) / max(train_rows, 1)


def stream_schedule(training_args, train_rows: int | None) -> None:
    """Fit the training arguments to a stream: a number of steps, and steps (not epochs) between evaluations.

    A stream has no length to count epochs in: `max_steps` bounds the run, or, when the dataset's metadata gives its
    length (`train_rows`), it is computed from `num_train_epochs`. The pipeline's epoch schedule (evaluate, save and
    log every epoch) becomes every tenth of the run. The stream's own state resumes it, so no batch is skipped by
    reading (`ignore_data_skip`).

    Raises:
        PipelineError: no max_steps and a stream of unknown length.
    """
    import math

    from transformers.trainer_utils import IntervalStrategy, SaveStrategy

    if training_args.max_steps <= 0:
        if not train_rows:
            raise PipelineError("streaming: the stream's length is unknown, set max_steps (optimizer steps to train "
                                "for)")
        training_args.max_steps = max(1, math.ceil(train_rows * training_args.num_train_epochs
                                                   / images_per_step(training_args)))
    every = max(1, math.ceil(training_args.max_steps / 10))
    for strategy, steps, kind in (("eval_strategy", "eval_steps", IntervalStrategy),
                                  ("save_strategy", "save_steps", SaveStrategy),
                                  ("logging_strategy", "logging_steps", IntervalStrategy)):
        if plain(vars(training_args)[strategy]) == "epoch":
            setattr(training_args, strategy, kind.STEPS)
            setattr(training_args, steps, every)
    training_args.ignore_data_skip = True


def speed_summary(training_args, data_args) -> str:
    """One line with the settings that decide throughput: precision, loader, transforms, optimizer, compilation."""
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else (
        "fp32 (tf32 matmuls)" if training_args.tf32 else "fp32")
    workers = training_args.dataloader_num_workers
    return ", ".join([
        precision,
        f"{workers} loader worker{'' if workers == 1 else 's'}",
        "pinned memory" if training_args.dataloader_pin_memory else "unpinned memory",
        ("fast transforms (uint8, normalize on device)" + (", pixel cache" if data_args.pixel_cache else ""))
        if data_args.fast_transforms else "per-image float transforms",
        f"optim {plain(training_args.optim)}",
        "torch.compile" if training_args.torch_compile else "eager",
    ])
