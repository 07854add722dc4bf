"""`vit-pipeline benchmark RECIPE.yaml [--steps N]`: how fast this machine trains a recipe, against the example script.

For the recipe as configured ("pipeline") and for a reference configuration (`benchmarks/reference.yaml`: what
transformers' `examples/pytorch/image-classification/run_image_classification.py` does as users run it), in the same
process, on the same model, data, batch size and optimizer, it measures:

- data only: images/s out of the training DataLoader alone, up to normalized float batches on the model's device;
- model only: images/s of Trainer steps (forward, backward, optimizer) on a synthetic batch already on the device;
- end to end: images/s of Trainer steps on the recipe's data;
- peak memory: CUDA `max_memory_allocated`, or the training process's peak RSS on CPU (loader workers not counted);
- MFU: model FLOPs utilisation, images/s x training FLOPs per image / the device's peak FLOP/s.

Every figure is steady state: the first `--warmup` steps (worker start-up, compilation, allocator growth) are not timed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from pipeline import PipelineError
from pipeline.training.throughput import (  # noqa: F401
    GPU_PEAK_TFLOPS,
    REFERENCE_FILE,
    TRANSFORM_KINDS,
    USAGE,
    ExampleScriptTransform,
    Figures,
    Options,
    _Indices,
    _make_trainer,
    _peak_memory_mib,
    _rate,
    _reset_peak_memory,
    _row,
    _SameBatch,
    _si,
    _split_options,
    _step_timer,
    _synchronize,
    counted_flops_per_image,
    device_peak,
    measure_data,
    measure_end_to_end,
    measure_model,
    measured_matmul_flops,
    read_reference,
    report,
    training_flops_per_image,
    vit_macs_per_image,
)
from pipeline.utils import cpu_count, setup_logging

logger = logging.getLogger("pipeline")


def main(argv: list[str] | None = None) -> dict:
    """`vit-pipeline benchmark RECIPE.yaml [--steps N] [--warmup N] [--reference FILE] [--json FILE] [flags]`.

    Returns:
        The figures as a dict (what `--json` writes).

    Raises:
        PipelineError: bad flags, an unreadable reference, or a recipe the parser rejects.
    """
    from pipeline.config import RecipeParser, speed_summary

    argv = sys.argv[1:] if argv is None else list(argv)
    options, recipe_argv = _split_options(argv)
    if not recipe_argv:
        raise PipelineError("no recipe: vit-pipeline benchmark RECIPE.yaml [--steps N]")

    # Configuration: the recipe as the pipeline runs it, and the reference on top of it; no eval, no checkpoints.
    workdir = tempfile.mkdtemp(prefix="vit-pipeline-benchmark-")
    overrides = ["--output_dir", workdir, "--eval_strategy", "no", "--save_strategy", "no", "--logging_strategy", "no",
                 "--load_best_model_at_end", "false", "--report_to", "none", "--disable_tqdm", "true",
                 "--dataloader_drop_last", "true", "--push_to_hub", "false", "--verify_images", "false"]
    parser = RecipeParser(prog="vit-pipeline benchmark")
    configs = {"pipeline": ("pipeline", parser.parse(recipe_argv + overrides))}
    if options.reference:
        kind, reference_flags = read_reference(options.reference)
        configs["reference"] = (kind, parser.parse(recipe_argv + reference_flags + overrides))
    model_args, data_args, _, recipe_path = configs["pipeline"][1]

    # Logging and seed.
    import torch
    import transformers
    from transformers import set_seed

    setup_logging()
    transformers.utils.logging.set_verbosity_error()  # the figures are the output: no library warnings between
    set_seed(configs["pipeline"][1][2].seed)

    # Data, image processor and model, once: every configuration trains on the same rows from the same weights.
    from pipeline.data.load import load_splits
    from pipeline.data.transforms import image_spec, prepare_dataset
    from pipeline.model.load import load_image_processor, load_model

    splits = load_splits(data_args, seed=configs["pipeline"][1][2].seed)
    image_processor = load_image_processor(model_args)
    model = load_model(model_args, splits.labels)
    from pipeline.model.prepare import prepare_model

    # What `train` trains: a new resolution, a frozen backbone or LoRA change the work (and FLOPs) per image.
    model = prepare_model(model, image_processor, model_args)
    image_size = image_spec(image_processor).output_size
    flops_per_image, flops_source = training_flops_per_image(model, image_size)
    device = configs["pipeline"][1][2].device
    peak_flops, peak_source = device_peak(device)
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, {cpu_count()} CPU cores"
    else:
        where = f"cpu ({cpu_count()} cores, {torch.get_num_threads()} torch threads)"

    # Per configuration: its training dataset (the transforms differ) and warm-up.
    results: dict[str, Figures] = {}
    runs = {}
    for name, (kind, (_, config_data, args, _)) in configs.items():
        warmup = options.warmup if options.warmup is not None else (10 if args.torch_compile else 3)
        args.max_steps = warmup + options.steps
        if kind == "example_script":
            dataset = splits.train.with_transform(ExampleScriptTransform(image_processor))
            settings = speed_summary(args, dataclasses.replace(config_data, fast_transforms=False, pixel_cache=False))
            settings = settings.replace("per-image float transforms",
                                        "example-script per-image PIL transforms (set_transform)")
        else:
            start = time.perf_counter()
            dataset = prepare_dataset(splits.train, image_processor, config_data, train=True,
                                      num_proc=config_data.preprocessing_num_workers)
            settings = speed_summary(args, config_data)
            if config_data.pixel_cache:
                # Paid once per dataset (then found again in the datasets cache), not per epoch: shown apart.
                seconds = time.perf_counter() - start
                settings += f" (cache: {len(dataset)} images in {seconds:.1f} s, {len(dataset) / seconds:,.0f}/s)"
        if len(dataset) < args.train_batch_size:
            raise PipelineError(f"{len(dataset)} training images, fewer than one batch of {args.train_batch_size}: "
                                "lower per_device_train_batch_size")
        runs[name] = (args, dataset, warmup)
        results[name] = Figures(settings=settings)

    # Measurements: the configurations take turns, so that a busy spell of the machine hits both alike; each figure
    # keeps its best value over the repeats (the least disturbed one).
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for repeat in range(options.repeats):
        for name, (args, dataset, warmup) in runs.items():
            figures = results[name]
            _apply_tf32(args)
            set_seed(args.seed)
            logger.info("Benchmarking %s (%d/%d): %s", name, repeat + 1, options.repeats, figures.settings)
            data = measure_data(model, args, dataset, image_processor, warmup, options.steps)
            model_only = measure_model(model, args, image_size, len(splits.labels), image_processor, warmup,
                                       options.steps)
            end_to_end, peak = measure_end_to_end(model, args, dataset, image_processor, warmup, options.steps)
            figures.data_images_per_s = max(figures.data_images_per_s, data)
            figures.model_images_per_s = max(figures.model_images_per_s, model_only)
            figures.end_to_end_images_per_s = max(figures.end_to_end_images_per_s, end_to_end)
            figures.peak_memory_mib = max(figures.peak_memory_mib, peak)
            figures.extra.setdefault("runs", []).append(
                {"data_images_per_s": data, "model_images_per_s": model_only, "end_to_end_images_per_s": end_to_end,
                 "peak_memory_mib": peak})
    if device.type == "cpu":
        # A busy spell during the first measurement would understate the peak (and overstate MFU): measure again.
        peak_flops = max(peak_flops, device_peak(device)[0])
    for figures in results.values():
        figures.mfu_model = figures.model_images_per_s * flops_per_image / peak_flops
        figures.mfu_end_to_end = figures.end_to_end_images_per_s * flops_per_image / peak_flops

    # Report.
    args = configs["pipeline"][1][2]
    if device.type == "cpu" and load_before is not None:
        # Other processes on the same cores skew CPU figures: say how busy the machine was.
        where += f", load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    memory_kind = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS of the training process"
    header = [
        f"vit-pipeline benchmark {recipe_path or ''} on {where}, torch {torch.__version__}",
        f"model: {model.config.model_type}, {type(model).__name__}, {image_size[0]}x{image_size[1]} px, "
        f"{_si(flops_per_image)}FLOP per training image ({flops_source})",
        f"device peak: {_si(peak_flops)}FLOP/s ({peak_source}); peak memory: {memory_kind}",
        f"batch {args.train_batch_size} x {args.gradient_accumulation_steps} accumulation, {options.steps} timed "
        f"steps after {', '.join(f'{w} ({n})' for n, (_, _, w) in runs.items())} warm-up steps, best of "
        f"{options.repeats} run{'s' if options.repeats != 1 else ''}, {len(splits.train)} training images",
    ]
    print(report(results, header), flush=True)
    figures_json = {
        "recipe": recipe_path,
        "device": where,
        "image_size": list(image_size),
        "flops_per_image": flops_per_image,
        "device_peak_flops": peak_flops,
        "device_peak_source": peak_source,
        "steps": options.steps,
        "repeats": options.repeats,
        "configurations": {name: dataclasses.asdict(f) for name, f in results.items()},
    }
    if len(results) == 2:
        a, b = results["pipeline"], results["reference"]
        figures_json["ratio"] = {key: getattr(a, key) / getattr(b, key) for key in (
            "data_images_per_s", "model_images_per_s", "end_to_end_images_per_s", "peak_memory_mib")}
    if options.json:
        Path(options.json).write_text(json.dumps(figures_json, indent=2) + "\n")
    return figures_json


def _apply_tf32(args) -> None:
    # TF32 is process-wide state and both configurations run in this process: set it to this one's value.
    from transformers.utils import is_torch_tf32_available
    from transformers.utils.import_utils import enable_tf32

    if is_torch_tf32_available():
        enable_tf32(bool(args.tf32))
