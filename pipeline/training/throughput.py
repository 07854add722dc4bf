"""Throughput measurements for `vit-pipeline benchmark`: data-only, model-only and end-to-end images/s, peak
memory, FLOPs per image and the device's peak, on the Trainer backend's own `PipelineTrainer`."""


from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import resource
import sys
import time
from pathlib import Path

from vit_pipeline import PipelineError

logger = logging.getLogger("vit_pipeline")

# The reference configuration of `vit-pipeline benchmark` (transformers' example script as users run it): package
# data, so an installed package finds it too.
REFERENCE_FILE = Path(__file__).resolve().with_name("reference.yaml")
# Dense (no sparsity) bf16 / fp16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s; the first name that is part of
# the device's name wins, so the PCIe and NVL variants come before the SXM H100.
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
)


# --- What the reference does: transformers' example script (run_image_classification.py), as users run it.


class ExampleScriptTransform:
    """The example script's `train_transforms` for `set_transform`: per image, on PIL, float out of every row.

    `RandomResizedCrop`, `RandomHorizontalFlip`, `ToTensor`, `Normalize` (torchvision v1 on PIL images), applied to
    `image.convert("RGB")` of each decoded PIL image.
    """

    def __init__(self, image_processor):
        from torchvision.transforms import Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop, ToTensor

        from vit_pipeline.data.transforms import image_spec

        spec = image_spec(image_processor)
        self.transform = Compose([RandomResizedCrop(spec.output_size), RandomHorizontalFlip(), ToTensor(),
                                  Normalize(mean=spec.mean, std=spec.std)])

    def __call__(self, batch: dict) -> dict:
        return {"pixel_values": [self.transform(image.convert("RGB")) for image in batch["image"]],
                "label": batch["label"]}


# --- FLOPs and the device's peak.


def vit_macs_per_image(config, image_size: tuple[int, int]) -> float | None:
    """Multiply-accumulates of one forward pass of a ViT-family classifier, from its config (None if not ViT-shaped).

    Patch embedding, then per layer the q/k/v and output projections (4·N·D²), attention scores and weighted sum
    (2·N²·D) and the MLP (2·N·D·I), then the classifier on the [CLS] token; N counts the [CLS] token.
    """
    names = ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size")
    if not all(isinstance(getattr(config, n, None), int) for n in names):
        return None
    d, layers, inner, patch = (getattr(config, n) for n in names)
    channels = getattr(config, "num_channels", 3)
    patches = (image_size[0] // patch) * (image_size[1] // patch)
    tokens = patches + 1
    embed = patches * channels * patch * patch * d
    per_layer = 4 * tokens * d * d + 2 * tokens * tokens * d + 2 * tokens * d * inner
    head = d * max(1, getattr(config, "num_labels", 1))
    return float(embed + layers * per_layer + head)


def counted_flops_per_image(model, image_size: tuple[int, int]) -> float:
    """Training FLOPs per image counted by `torch.utils.flop_counter` on one forward pass (x3 for the backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).to("cpu").eval()
    try:
        # The counter sees the matmuls of eager attention; fused SDPA kernels on CPU are not counted.
        model.set_attn_implementation("eager")
    except (AttributeError, ValueError):
        pass
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(pixel_values=torch.zeros(1, 3, *image_size))
    return 3.0 * counter.get_total_flops()


def si_prefix(value: float) -> str:
    """`value` with an SI prefix and 3 significant digits: 1.23e9 -> '1.23 G'."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{value:.3g} "


def training_flops_per_image(model, image_size: tuple[int, int]) -> tuple[float, str]:
    """FLOPs of one training step per image: 3 x 2 x forward MACs (forward, and a backward twice its cost)."""
    macs = vit_macs_per_image(model.config, image_size)
    if macs is not None:
        return 6.0 * macs, f"3 x 2 x {si_prefix(macs)}MAC per forward, from the config"
    return counted_flops_per_image(model, image_size), "3 x the forward FLOPs counted by torch's FlopCounterMode"


def measured_matmul_flops(device, dtype, size: int = 1024, seconds: float = 1.0) -> float:
    """Best FLOP/s of square matmuls on `device` over about `seconds` (the practical peak of this machine)."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _synchronize(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        _synchronize(device)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t0))
    return best


def device_peak(device) -> tuple[float, str]:
    """The device's peak FLOP/s for MFU, and where it comes from (datasheet table or measurement)."""
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS:
            if key in name:
                return tflops * 1e12, f"bf16 dense, datasheet, {name}"
        return measured_matmul_flops(device, torch.bfloat16, size=8192), f"measured: bf16 8192² matmul, {name}"
    threads = torch.get_num_threads()
    return (measured_matmul_flops(device, torch.float32),
            f"measured: best fp32 1024² matmul rate on {threads} thread{'s' if threads != 1 else ''}")


# --- Timing helpers.


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        # Linux: writing 5 resets the process's peak RSS (VmHWM) to its current RSS.
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux, bytes on macOS; it never resets.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 1024)


# Public name for the commands (train records its peak in all_results.json).
peak_memory_mib = _peak_memory_mib


def _step_timer(device, warmup: int, steps: int):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Clock the optimizer steps after the warm-up (synchronized, so queued GPU work is counted)."""

        def __init__(self):
            self.marks: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, warmup + steps):
                _synchronize(device)
                self.marks.append(time.perf_counter())

    return StepTimer()


class _Indices:
    """A map-style dataset of `length` rows whose collated batch is always the same synthetic batch."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index


class _SameBatch:
    def __init__(self, batch: dict):
        self.batch = batch

    def __call__(self, rows: list) -> dict:
        return self.batch


# --- The three measurements.


def _make_trainer(model, args, dataset, collator, image_processor, callbacks=()):
    from transformers.trainer_callback import PrinterCallback

    from vit_pipeline.training.trainer import PipelineTrainer

    trainer = PipelineTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                              processing_class=image_processor, callbacks=list(callbacks))
    # Keep the output to the benchmark's table (the printer would print every run's train metrics).
    trainer.remove_callback(PrinterCallback)
    return trainer


def first_batch_seconds(model, args, dataset, image_processor) -> float:
    """Seconds from building the training loader to its first batch (loader workers start, first rows decode)."""
    from vit_pipeline.data.transforms import collate

    trainer = _make_trainer(copy.deepcopy(model), args, dataset, collate, image_processor)
    start = time.perf_counter()
    loader = trainer.get_train_dataloader()
    next(iter(loader))
    seconds = time.perf_counter() - start
    del loader, trainer
    return seconds


def measure_data(model, args, dataset, image_processor, warmup: int, steps: int) -> float:
    """Images/s of the Trainer's training DataLoader alone, up to finished `pixel_values` on the model's device."""
    from vit_pipeline.data.transforms import collate

    trainer = _make_trainer(copy.deepcopy(model), args, dataset, collate, image_processor)
    device = args.device
    loader = trainer.get_train_dataloader()
    batches, start = 0, None
    while batches < warmup + steps:
        for batch in loader:
            inputs = trainer._prepare_inputs(batch)
            batches += 1
            if batches == max(warmup, 1) and start is None:
                _synchronize(device)
                start, first = time.perf_counter(), batches
            if batches >= warmup + steps:
                break
    _synchronize(device)
    elapsed = time.perf_counter() - start
    images = (batches - first) * inputs["pixel_values"].shape[0]
    del loader, trainer, inputs
    gc.collect()
    return images / elapsed if images else float("nan")


def measure_model(model, args, image_size, num_labels: int, image_processor, warmup: int, steps: int) -> float:
    """Images/s of Trainer steps on one synthetic batch that is already on the device (no data cost at all)."""
    import torch

    args = dataclasses.replace(args, dataloader_num_workers=0, dataloader_pin_memory=False,
                               dataloader_persistent_workers=False)
    device = args.device
    batch_size = args.train_batch_size
    batch = {"pixel_values": torch.randn(batch_size, 3, *image_size, device=device),
             "labels": torch.randint(0, num_labels, (batch_size,), device=device)}
    timer = _step_timer(device, warmup, steps)
    length = (warmup + steps) * batch_size * args.gradient_accumulation_steps
    trainer = _make_trainer(copy.deepcopy(model), args, _Indices(length), _SameBatch(batch), image_processor, [timer])
    trainer.train()
    del trainer
    gc.collect()
    return _rate(timer, steps, args)


def measure_end_to_end(model, args, dataset, image_processor, warmup: int, steps: int) -> tuple[float, float]:
    """Images/s of Trainer steps on the real data, and the peak memory (MiB) while training."""
    from vit_pipeline.data.transforms import collate

    device = args.device
    timer = _step_timer(device, warmup, steps)
    trainer = _make_trainer(copy.deepcopy(model), args, dataset, collate, image_processor, [timer])
    _reset_peak_memory(device)
    trainer.train()
    _synchronize(device)
    peak = _peak_memory_mib(device)
    del trainer
    gc.collect()
    return _rate(timer, steps, args), peak


def _rate(timer, steps: int, args) -> float:
    if len(timer.marks) != 2:
        raise PipelineError("the benchmark ran fewer steps than asked: check max_steps and the dataset size")
    images = steps * args.train_batch_size * args.gradient_accumulation_steps
    return images / (timer.marks[1] - timer.marks[0])
