"""What `vit-pipeline benchmark` reports: the figures of each configuration, the printed table and header, the
start-up and recipe-run lines, and the JSON that `--json` writes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vit_pipeline.training.throughput import si_prefix


@dataclass
class Figures:
    """What one configuration measured."""

    settings: str
    data_images_per_s: float = 0.0
    model_images_per_s: float = 0.0
    end_to_end_images_per_s: float = 0.0
    peak_memory_mib: float = 0.0
    mfu_model: float = 0.0
    mfu_end_to_end: float = 0.0
    extra: dict = field(default_factory=dict)


def startup_line(startup: dict) -> str:
    """Start-up in words: loading (and checking) the data, then the first training batch."""
    first = f"; first training batch {startup['first_batch_s']:.1f} s later" if "first_batch_s" in startup else ""
    if startup["streaming"]:
        return (f"start-up (streaming): stream opened, {startup['eval_rows']:,} eval rows and the labels read in "
                f"{startup['load_s']:.1f} s, whatever the stream's length{first}")
    if startup.get("checked_while_caching"):
        # One decode pass: the pixel cache's (timed with the configuration's cache) is the image check.
        return (f"start-up: {startup['train_rows']:,} + {startup['eval_rows']:,} images loaded in "
                f"{startup['load_s']:.1f} s ({startup['ms_per_image']:.2f} ms per image; checked while the pixel "
                f"cache is built){first}")
    return (f"start-up: {startup['train_rows']:,} + {startup['eval_rows']:,} images loaded and checked in "
            f"{startup['load_s']:.1f} s ({startup['ms_per_image']:.2f} ms per image){first}")


def recipe_run(results: dict[str, Figures], steps: int | None, step_images: int, epochs: float | None,
               cache_seconds: dict[str, float]) -> dict | None:
    """The recipe's whole run of training steps at each configuration's end-to-end rate, its pixel cache included
    (evaluation not counted): what the per-step figures add up to over the recipe's epochs."""
    if not steps:
        return None
    images = steps * step_images
    seconds = {name: images / f.end_to_end_images_per_s + cache_seconds.get(name, 0.0)
               for name, f in results.items() if f.end_to_end_images_per_s > 0}
    run = {"steps": steps, "images": images, "epochs": epochs,
           "seconds": seconds, "cache_seconds": cache_seconds}
    if len(seconds) == 2:
        run["ratio"] = seconds["reference"] / seconds["pipeline"]
    return run


def recipe_run_line(run: dict) -> str:
    """The recipe's run in words: steps, epochs, seconds per configuration, and the speed-up."""
    epochs = f", {run['epochs']:.1f} epochs" if run["epochs"] else ""
    parts = []
    for name, seconds in run["seconds"].items():
        cache = run["cache_seconds"].get(name, 0.0)
        parts.append(f"{name} {seconds:,.1f} s" + (f" (pixel cache {cache:.1f} s of it)" if cache else ""))
    ratio = f": {run['ratio']:.2f}x" if "ratio" in run else ""
    return (f"recipe run: {run['steps']:,} steps of {run['images'] // run['steps']} images{epochs}, training steps "
            f"at the end-to-end rate: {', '.join(parts)}{ratio}")


def header_lines(recipe_path, where: str, model, image_size, flops: tuple[float, str], peak: tuple[float, str], args,
                 options, runs: dict, train_images: int | str) -> list[str]:
    """The lines above the table: machine, model and FLOPs, device peak, batch and steps."""
    import torch

    memory_kind = "CUDA max_memory_allocated" if args.device.type == "cuda" else "peak RSS of the training process"
    return [
        f"vit-pipeline benchmark {recipe_path or ''} on {where}, torch {torch.__version__}",
        f"model: {model.config.model_type}, {type(model).__name__}, {image_size[0]}x{image_size[1]} px, "
        f"{si_prefix(flops[0])}FLOP per training image ({flops[1]})",
        f"device peak: {si_prefix(peak[0])}FLOP/s ({peak[1]}); peak memory: {memory_kind}",
        f"batch {args.train_batch_size} x {args.gradient_accumulation_steps} accumulation, {options.steps} timed "
        f"steps after {', '.join(f'{w} ({n})' for n, (_, _, w) in runs.items())} warm-up steps, best of "
        f"{options.repeats} run{'s' if options.repeats != 1 else ''}, {train_images} training images",
    ]


def as_json(results: dict[str, Figures], recipe_path, where: str, image_size, flops_per_image: float,
            peak: tuple[float, str], options) -> dict:
    """The figures as `--json` writes them (the ratio pipeline / reference when both ran)."""
    figures_json = {
        "recipe": recipe_path,
        "device": where,
        "image_size": list(image_size),
        "flops_per_image": flops_per_image,
        "device_peak_flops": peak[0],
        "device_peak_source": peak[1],
        "steps": options.steps,
        "repeats": options.repeats,
        "configurations": {name: {**dataclasses.asdict(f), "end_to_end_over_model": data_share(f)}
                           for name, f in results.items()},
    }
    if len(results) == 2:
        a, b = results["pipeline"], results["reference"]
        figures_json["ratio"] = {key: getattr(a, key) / getattr(b, key) for key in (
            "data_images_per_s", "model_images_per_s", "end_to_end_images_per_s", "peak_memory_mib")}
    return figures_json


def data_share(figures: Figures) -> float:
    """End to end over model only: the fraction of the model's own rate that training on real data keeps."""
    return figures.end_to_end_images_per_s / figures.model_images_per_s if figures.model_images_per_s else 0.0


def _row(label: str, values: list[float], unit_format: str, ratio: bool = True) -> str:
    cells = [format(v, unit_format) for v in values]
    text = f"{label:<26}" + "".join(f"{c:>14}" for c in cells)
    if ratio and len(values) == 2 and values[1] > 0:
        text += f"{values[0] / values[1]:>11.2f}x"
    return text


def report(results: dict[str, Figures], header: list[str]) -> str:
    """The printed table: one column per configuration, the ratio pipeline / reference last."""
    names = list(results)
    lines = [*header, "", f"{'':<26}" + "".join(f"{n:>14}" for n in names) + (f"{'ratio':>12}" if len(names) == 2
                                                                                else "")]
    figures = list(results.values())
    lines.append(_row("data only (images/s)", [f.data_images_per_s for f in figures], ",.1f"))
    lines.append(_row("model only (images/s)", [f.model_images_per_s for f in figures], ",.1f"))
    lines.append(_row("end to end (images/s)", [f.end_to_end_images_per_s for f in figures], ",.1f"))
    # What the data path leaves of the model's rate (100%: the model never waits for data).
    lines.append(f"{'end to end / model only':<26}" + "".join(f"{f'{100 * data_share(f):.0f}%':>14}" for f in figures))
    lines.append(_row("peak memory (MiB)", [f.peak_memory_mib for f in figures], ",.0f"))
    lines.append(_row("MFU model only (%)", [100 * f.mfu_model for f in figures], ".3g"))
    lines.append(_row("MFU end to end (%)", [100 * f.mfu_end_to_end for f in figures], ".3g"))
    lines.append("")
    lines += [f"{name}: {f.settings}" for name, f in results.items()]
    return "\n".join(lines)
