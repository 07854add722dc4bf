"""`vit-pipeline benchmark RECIPE.yaml [--steps N]`: how fast this machine trains a recipe, against the example script.

For the recipe as configured ("pipeline") and for a reference configuration (`pipeline/training/reference.yaml`,
shipped in the package: what transformers' `examples/pytorch/image-classification/run_image_classification.py` does as
users run it), in the same process, on the same model, data, batch size and optimizer, it measures:

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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vit_pipeline import PipelineError
from vit_pipeline.config.machine import fit_workers_to_data, images_per_step, planned_epochs, planned_steps
from vit_pipeline.training.throughput import (
    REFERENCE_FILE,
    ExampleScriptTransform,
    counted_flops_per_image,  # noqa: F401 - part of the command's public surface (tests, notebooks)
    device_peak,
    first_batch_seconds,
    measure_data,
    measure_end_to_end,
    measure_model,
    training_flops_per_image,
    vit_macs_per_image,  # noqa: F401
)
from vit_pipeline.training.throughput_report import (
    Figures,
    as_json,
    header_lines,
    recipe_run,
    recipe_run_line,
    report,
    startup_line,
)
from vit_pipeline.utils import OneLineErrors, cpu_count, setup_logging

logger = logging.getLogger("vit_pipeline")

# Keys of a reference file that are the benchmark's own, not recipe options.
TRANSFORM_KINDS = ("example_script", "pipeline")
# What the benchmark sets on every configuration: no evaluation, checkpoints, logs or pushes while it measures.
OVERRIDES = ["--eval_strategy", "no", "--save_strategy", "no", "--logging_strategy", "no",
             "--load_best_model_at_end", "false", "--report_to", "none", "--disable_tqdm", "true",
             "--dataloader_drop_last", "true", "--push_to_hub", "false", "--verify_images", "false"]


@dataclass
class Options:
    """The benchmark's own flags; every other flag is a recipe field, applied to both configurations."""

    steps: int = field(default=20, metadata={"help": "Timed steps per measurement."})
    warmup: int | None = field(default=None, metadata={
        "help": "Untimed steps first (default 3; 10 with torch_compile)."})
    repeats: int = field(default=1, metadata={
        "help": "Measure everything N times, alternating the configurations, and keep the best of each figure (more "
                "on a busy machine)."})
    reference: str | None = field(default=str(REFERENCE_FILE), metadata={
        "help": "Reference configuration: recipe keys applied on top of the recipe, and `transforms` (default: the "
                "transformers example script's way, shipped with the package)."})
    no_reference: bool = field(default=False, metadata={"help": "Measure the recipe only."})
    json: str | None = field(default=None, metadata={"help": "Also write the figures as JSON to this file."})

    def __post_init__(self):
        for name, least in (("steps", 1), ("warmup", 0), ("repeats", 1)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise PipelineError(f"--{name} must be at least {least}, got {value}")
        if self.no_reference:
            self.reference = None


def parse_options(argv: list[str]) -> tuple[Options, list[str]]:
    """Split `argv` into the benchmark's `Options` and the recipe's own arguments (path and field flags).

    Raises:
        PipelineError: a bad value for a benchmark flag, in one line.
    """
    from transformers import HfArgumentParser

    class OptionParser(OneLineErrors, HfArgumentParser):
        pass

    parser = OptionParser(Options, prog="vit-pipeline benchmark", allow_abbrev=False,
                          usage="vit-pipeline benchmark RECIPE.yaml [--steps N] [--warmup N] [--repeats N] "
                                "[--reference FILE | --no_reference] [--json FILE] [--field value ...]",
                          description=__doc__.splitlines()[0])
    options, rest = parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    return options, rest


def read_reference(path: str) -> tuple[str, list[str]]:
    """Read a reference file: its transform kind and its other keys as command-line flags.

    Raises:
        PipelineError: the file cannot be read, is not a mapping, or names an unknown transform kind.
    """
    from vit_pipeline.config.parser import _scalar

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"cannot read the reference configuration {path}: {err}; pass --reference FILE or "
                            "--no_reference") from err
    if not isinstance(data, dict):
        raise PipelineError(f"reference configuration {path} must be a mapping of key: value")
    kind = data.pop("transforms", "pipeline")
    if kind not in TRANSFORM_KINDS:
        raise PipelineError(f"transforms: {kind} in {path} is not one of {', '.join(TRANSFORM_KINDS)}")
    return kind, [f"--{key}={_scalar(value)}" for key, value in data.items()]


def configurations(options: Options, recipe_argv: list[str]) -> dict[str, tuple[str, tuple]]:
    """The configurations to measure, by name: (transform kind, the parsed recipe), the reference on top of it."""
    from vit_pipeline.config import RecipeParser

    overrides = ["--output_dir", tempfile.mkdtemp(prefix="vit-pipeline-benchmark-"), *OVERRIDES]
    parser = RecipeParser(prog="vit-pipeline benchmark")
    configs = {"pipeline": ("pipeline", parser.parse(recipe_argv + overrides))}
    if configs["pipeline"][1][1].streaming:
        # The example script reads map-style data only: a stream is measured on the pipeline's own path.
        logger.info("streaming: the recipe only (the reference, the example script's way, cannot read a stream)")
    elif options.reference:
        kind, reference_flags = read_reference(options.reference)
        configs["reference"] = (kind, parser.parse(recipe_argv + reference_flags + overrides))
    return configs


def load_timed(data_args, args, decision=None) -> tuple[object, dict]:
    """The splits, and how long loading them took: what start-up costs before the first step.

    Map-style data is loaded and every image checked (`verify_images: true`, as `train` does by default; the
    measurements themselves skip nothing; with the pixel cache on, the cache pass is the check, timed apart); a
    stream opens, reads its bounded eval split and labels, and no more. `decision` decides an unset `pixel_cache`
    as `train` does.
    """
    start = time.perf_counter()
    if data_args.streaming:
        from vit_pipeline.data.stream import stream_splits

        splits = stream_splits(data_args, seed=args.seed)
        seconds = time.perf_counter() - start
        return splits, {"streaming": True, "load_s": seconds, "train_rows": splits.train_rows,
                        "eval_rows": len(splits.eval)}
    from vit_pipeline.data.load import load_splits

    splits = load_splits(dataclasses.replace(data_args, verify_images=True), seed=args.seed, cache_decision=decision)
    seconds = time.perf_counter() - start
    rows = len(splits.train) + len(splits.eval)
    return splits, {"streaming": False, "load_s": seconds, "train_rows": len(splits.train),
                    "eval_rows": len(splits.eval), "ms_per_image": 1000 * seconds / max(rows, 1),
                    "checked_while_caching": bool(splits.pixel_cache)}


def training_dataset(kind: str, splits, image_processor, data_args, args) -> tuple[object, str, float]:
    """The training rows a configuration measures on (its transforms), its settings in words, and the seconds its
    pixel cache took to build (0 without one)."""
    from vit_pipeline.config import speed_summary
    from vit_pipeline.data.prepare import prepare_dataset

    if data_args.streaming:
        from vit_pipeline.data.stream import prepare_stream

        return prepare_stream(splits.train, image_processor, data_args), speed_summary(args, data_args) + (
            ", streaming"), 0.0

    if kind == "example_script":
        dataset = splits.train.with_transform(ExampleScriptTransform(image_processor))
        settings = speed_summary(args, dataclasses.replace(data_args, fast_transforms=False, pixel_cache=False))
        return dataset, settings.replace("per-image float transforms",
                                         "example-script per-image PIL transforms (set_transform)"), 0.0
    start = time.perf_counter()
    dataset = prepare_dataset(splits.train, image_processor, data_args, train=True,
                              num_proc=data_args.preprocessing_num_workers)
    settings, seconds = speed_summary(args, data_args), 0.0
    if data_args.pixel_cache:
        # Paid once per dataset (then found again in the datasets cache), not per epoch: shown apart.
        seconds = time.perf_counter() - start
        settings += f" (cache: {len(dataset)} images in {seconds:.1f} s, {len(dataset) / seconds:,.0f}/s)"
    if len(dataset) < args.train_batch_size:
        raise PipelineError(f"{len(dataset)} training images, fewer than one batch of {args.train_batch_size}: "
                            "lower per_device_train_batch_size")
    return dataset, settings, seconds


def measure(runs: dict, results: dict[str, Figures], model, image_processor, image_size, num_labels: int,
            options: Options) -> None:
    """Measure every configuration `options.repeats` times, taking turns, so that a busy spell of the machine hits
    both alike; each figure keeps its best value over the repeats (the least disturbed one)."""
    from transformers import set_seed

    for repeat in range(options.repeats):
        for name, (args, dataset, warmup) in runs.items():
            figures = results[name]
            _apply_tf32(args)
            set_seed(args.seed)
            logger.info("Benchmarking %s (%d/%d): %s", name, repeat + 1, options.repeats, figures.settings)
            data = measure_data(model, args, dataset, image_processor, warmup, options.steps)
            model_only = measure_model(model, args, image_size, num_labels, image_processor, warmup, options.steps)
            end_to_end, peak = measure_end_to_end(model, args, dataset, image_processor, warmup, options.steps)
            figures.data_images_per_s = max(figures.data_images_per_s, data)
            figures.model_images_per_s = max(figures.model_images_per_s, model_only)
            figures.end_to_end_images_per_s = max(figures.end_to_end_images_per_s, end_to_end)
            figures.peak_memory_mib = max(figures.peak_memory_mib, peak)
            figures.extra.setdefault("runs", []).append(
                {"data_images_per_s": data, "model_images_per_s": model_only, "end_to_end_images_per_s": end_to_end,
                 "peak_memory_mib": peak})


def machine(device, load_before: float | None = None) -> str:
    """Where the figures were measured, in words (the device, cores, torch threads; on CPU the load average before
    the measurements and now)."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {cpu_count()} CPU cores"
    where = f"cpu ({cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    if load_before is not None:
        # Other processes on the same cores skew CPU figures: say how busy the machine was.
        where += f", load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    return where


def prepare_runs(configs: dict, options: Options, splits, image_processor) -> tuple[dict, dict, dict]:
    """Per configuration: its training rows (its transforms; the pipeline's pixel cache as loading decided it), its
    warm-up and timed steps. Returns (runs, empty figures, seconds each pixel cache took to build)."""
    results, runs, cache_seconds = {}, {}, {}
    for name, (kind, (_, config_data, config_args, _)) in configs.items():
        warmup = options.warmup if options.warmup is not None else (10 if config_args.torch_compile else 3)
        if kind != "example_script" and not config_data.streaming and config_data.pixel_cache is None:
            config_data = dataclasses.replace(config_data, pixel_cache=splits.pixel_cache)
        if kind != "example_script" and not config_data.streaming:
            fit_workers_to_data(config_args, bool(config_data.pixel_cache))  # as `train` does
        config_args.max_steps = warmup + options.steps
        dataset, settings, cache_seconds[name] = training_dataset(kind, splits, image_processor, config_data,
                                                                  config_args)
        runs[name], results[name] = (config_args, dataset, warmup), Figures(settings=settings)
    return runs, results, cache_seconds


def main(argv: list[str]) -> dict:
    """`vit-pipeline benchmark RECIPE.yaml [--steps N] [--warmup N] [--reference FILE] [--json FILE] [flags]`.

    Returns:
        The figures as a dict (what `--json` writes).

    Raises:
        PipelineError: bad flags, an unreadable reference, or a recipe the parser rejects.
    """
    options, recipe_argv = parse_options(argv)
    if not recipe_argv:
        raise PipelineError("no recipe: vit-pipeline benchmark RECIPE.yaml [--steps N]")
    # Configuration: the recipe as the pipeline runs it, and the reference on top of it; no eval, no checkpoints.
    configs = configurations(options, recipe_argv)
    model_args, data_args, args, recipe_path = configs["pipeline"][1]

    # Logging and seed.
    import transformers
    from transformers import set_seed

    setup_logging()
    transformers.utils.logging.set_verbosity_error()  # the figures are the output: no library warnings between
    set_seed(args.seed)

    # Data, image processor and model, once: every configuration trains on the same rows from the same weights.
    from vit_pipeline.commands.train import cache_decision
    from vit_pipeline.data.transforms import image_spec
    from vit_pipeline.model.load import load_image_processor, load_model
    from vit_pipeline.model.prepare import prepare_model

    image_processor = load_image_processor(model_args)
    # An unset pixel_cache is decided as `train` decides it: the recipe's epochs (before max_steps becomes the timed
    # steps) over these images.
    splits, startup = load_timed(data_args, args, cache_decision(model_args, args, image_processor))
    # What `train` trains: a new resolution, a frozen backbone or LoRA change the work (and FLOPs) per image.
    model = prepare_model(load_model(model_args, splits.labels), image_processor, model_args)
    image_size = image_spec(image_processor).output_size
    flops_per_image, flops_source = training_flops_per_image(model, image_size)
    peak_flops, peak_source = device_peak(args.device)

    # Per configuration: its training rows (the transforms differ) and warm-up; then the measurements.
    train_rows = splits.train_rows if data_args.streaming else len(splits.train)
    steps = planned_steps(args, train_rows) if args.max_steps > 0 or train_rows else None
    epochs = planned_epochs(args, train_rows) if train_rows else None
    runs, results, cache_seconds = prepare_runs(configs, options, splits, image_processor)
    startup["first_batch_s"] = first_batch_seconds(model, *runs["pipeline"][:2], image_processor)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    measure(runs, results, model, image_processor, image_size, len(splits.labels), options)
    if args.device.type == "cpu":
        # A busy spell during the first measurement would understate the peak (and overstate MFU): measure again.
        peak_flops = max(peak_flops, device_peak(args.device)[0])
    for figures in results.values():
        figures.mfu_model = figures.model_images_per_s * flops_per_image / peak_flops
        figures.mfu_end_to_end = figures.end_to_end_images_per_s * flops_per_image / peak_flops

    # Report.
    where = machine(args.device, load_before)
    header = header_lines(recipe_path, where, model, image_size, (flops_per_image, flops_source),
                          (peak_flops, peak_source), args, options, runs,
                          splits.train_rows or "a stream of" if data_args.streaming else len(splits.train))
    run = recipe_run(results, steps, images_per_step(args), epochs, cache_seconds)
    print(report(results, header) + "\n" + startup_line(startup) + (f"\n{recipe_run_line(run)}" if run else ""),
          flush=True)
    figures_json = as_json(results, recipe_path, where, image_size, flops_per_image, (peak_flops, peak_source),
                           options)
    if args.teacher_model_name_or_path:
        figures_json["distillation"] = _teacher_share(args, image_processor, image_size, results, options)
    figures_json["startup"], figures_json["recipe_run"] = startup, run
    if options.json:
        Path(options.json).write_text(json.dumps(figures_json, indent=2) + "\n")
    return figures_json


def _apply_tf32(args) -> None:
    # TF32 is process-wide state and both configurations run in this process: set it to this one's value.
    from transformers.utils import is_torch_tf32_available
    from transformers.utils.import_utils import enable_tf32

    if is_torch_tf32_available():
        enable_tf32(bool(args.tf32))


def _teacher_share(args, image_processor, image_size, results: dict, options: Options) -> dict:
    """A distillation recipe: the teacher's forward per step and its share of a distillation step, printed."""
    from vit_pipeline.training.distillation import teacher_cost

    cost = teacher_cost(args, image_processor, image_size, results["pipeline"].model_images_per_s,
                        options.warmup if options.warmup is not None else 3, options.steps)
    print(f"teacher ({cost['teacher']}): {cost['teacher_ms_per_step']:.1f} ms forward per step against "
          f"{cost['student_ms_per_step']:.1f} ms for the student's step: {100 * cost['teacher_share']:.0f}% of a "
          "distillation step (model only)", flush=True)
    return cost
