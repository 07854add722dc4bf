"""`vit-pipeline compare RECIPE --models M1 M2[:key=value,...] --output_dir C [--field value ...]`: several models
trained on the same data, split, seed, augmentation and epochs, side by side.

Each model is a normal `vit-pipeline train` run (the train command's own code, in-process) in `C/<model>`, with the
recipe, the shared flags and its own overrides (`microsoft/resnet-50:learning_rate=1e-3,weight_decay=0.05`). Then,
per model: eval accuracy and macro F1 (mAP when the run reports one), parameters, GFLOPs per image (forward, counted
by torch's FlopCounterMode), training images/s, peak memory, inference latency at batch 1 and 32. Written to
`C/comparison.md`, `C/comparison.csv` and `C/comparison.png`. Run the same command again after an interruption:
finished models are skipped, an unfinished one resumes from its last checkpoint. The same command started by several
workers on one shared C (one per GPU or machine): each trains the next model no other worker holds, and the last to
finish writes the comparison (`vit_pipeline.training.claims`).

Uncertainty (`evaluation.significance`): each accuracy's 95% bootstrap interval, and for every pair of models the
difference in accuracy with McNemar's exact test on the same eval images, in comparison.md and `C/comparison_pairs.csv`.
`C/explanations.png`: the same eight eval images explained by each model, one column per model; comparison.md ends
with the faithfulness of each model's maps (`evaluation.explain.write_compare_explanations`).
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import re
import time
from pathlib import Path

from vit_pipeline import PipelineError
from vit_pipeline.utils import WEIGHT_FILES, setup_logging

logger = logging.getLogger("vit_pipeline")

USAGE = """usage: vit-pipeline compare RECIPE.yaml --models M1 M2[:key=value,...] ... --output_dir C [--field value ...]

Trains every model of --models with the recipe and the shared flags (each with its own overrides after ':'), one
output folder each under C, then writes C/comparison.md, C/comparison.csv and C/comparison.png. Running it again
skips finished models and resumes unfinished ones; several workers (GPUs, machines) running it on one shared C each
train the next model no other holds, and the last to finish writes the comparison. C/comparison_pairs.csv: every
pair's difference in accuracy and McNemar's exact p-value."""

ROW_FILE = "comparison_row.json"
COLUMNS = ("model", "overrides", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "macro_f1", "mAP",
           "parameters", "gflops_per_image",
           "train_images_per_second", "peak_memory_mib", "latency_batch1_ms", "latency_batch32_ms", "folder")
LATENCY_BATCHES = (1, 32)


def parse_model_spec(spec: str) -> tuple[str, dict[str, str]]:
    """`org/name[:key=value,key=value]` -> (model, {key: value}).

    Raises:
        PipelineError: an override is not `key=value`.
    """
    name, _, rest = spec.partition(":")
    if not name:
        raise PipelineError(f"--models entry '{spec}' has no model name before ':'")
    overrides: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PipelineError(f"--models entry '{spec}': override '{item}' is not key=value "
                                "(e.g. microsoft/resnet-50:learning_rate=1e-3)")
        overrides[key.strip().lstrip("-")] = value.strip()
    return name, overrides


def run_folder_name(name: str, overrides: dict[str, str]) -> str:
    """A folder name for one model of the comparison: `org--name`, plus its overrides."""
    base = "--".join(Path(name.rstrip("/")).parts[-2:]) if "/" in name.strip("/") else Path(name).name
    tail = "".join(f"_{k}={v}" for k, v in overrides.items())
    return re.sub(r"[^\w.=+-]", "-", base + tail)


def split_argv(argv: list[str], options: dict[str, str]) -> tuple[dict, list[str]]:
    """Take this command's own options out of argv; the rest goes to `train`.

    Args:
        options: option name -> "one" (takes one value) or "many" (takes values up to the next `--flag`).
    """
    own: dict = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, inline = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key in options:
            if options[key] == "many":
                values = [inline] if eq else []
                while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    values.append(argv[i + 1])
                    i += 1
                own[key] = values
            else:
                if eq:
                    own[key] = inline
                elif i + 1 < len(argv):
                    own[key] = argv[i + 1]
                    i += 1
                else:
                    raise PipelineError(f"--{key} needs a value")
        else:
            rest.append(arg)
        i += 1
    return own, rest


def _finished(folder: Path) -> bool:
    # The train command writes eval_results.json and the model after its last epoch, and the row once measured.
    return (folder / ROW_FILE).is_file() and (folder / "eval_results.json").is_file() and any(
        (folder / f).is_file() for f in WEIGHT_FILES)


def read_metrics(folder: Path) -> dict[str, float | None]:
    """Accuracy, macro F1 and (multi-label runs) mAP of a finished run, from its eval_results.json.

    Multi-label runs report subset accuracy, `f1_macro` and `map` (mean average precision over the classes).
    """
    results = json.loads((folder / "eval_results.json").read_text())
    if (folder / "all_results.json").is_file():
        results = {**json.loads((folder / "all_results.json").read_text()), **results}

    def first(*names):
        return next((results[f"eval_{n}"] for n in names if results.get(f"eval_{n}") is not None), None)

    return {"accuracy": first("accuracy", "subset_accuracy"), "macro_f1": first("f1", "f1_macro"),
            "mAP": first("map"), "train_images_per_second": results.get("train_samples_per_second")}


def latency_ms(model, image_size: tuple[int, int], batch_size: int, device, runs: int) -> float:
    """Median wall time of one forward pass on a `batch_size` batch (after warm-up), in milliseconds."""
    import statistics

    import torch

    from vit_pipeline.evaluation.inference import _autocast
    from vit_pipeline.training.throughput import _synchronize

    pixels = torch.randn(batch_size, 3, *image_size, device=device)
    times = []
    with torch.inference_mode(), _autocast(device):
        for i in range(runs + 2):
            start = time.perf_counter()
            model(pixel_values=pixels)
            _synchronize(device)
            if i >= 2:  # the first passes allocate and pick kernels
                times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def measure_folder(folder: Path, device) -> dict:
    """Parameters, forward GFLOPs per image and latency of the saved model in `folder`."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from vit_pipeline.data.transforms import image_spec
    from vit_pipeline.training.throughput import counted_flops_per_image

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    size = image_spec(AutoImageProcessor.from_pretrained(folder)).output_size
    row = {"parameters": sum(p.numel() for p in model.parameters()),
           # counted_flops_per_image counts a training step (3 x forward): one forward pass is a third.
           "gflops_per_image": counted_flops_per_image(model, size) / 3 / 1e9}
    model.to(device)
    cpu = device.type == "cpu"
    for batch in LATENCY_BATCHES:
        row[f"latency_batch{batch}_ms"] = latency_ms(model, size, batch, device, runs=(10 if batch == 1 else 5)
                                                     if cpu else 20)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _fmt(value, digits: int = 4) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def write_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) if row.get(k) is not None else "" for k in COLUMNS})
    return path


def write_markdown(rows: list[dict], path: Path, command: str, device: str, pairs: list[dict] | None = None
                   ) -> Path:
    from vit_pipeline.evaluation.significance import interval_cell, pairs_markdown

    has_map = any(r.get("mAP") is not None for r in rows)
    header = ["model", "overrides", "accuracy", "accuracy 95% CI", "macro F1"] + (["mAP"] if has_map else []) + [
        "parameters (M)", "GFLOPs / image", "train images/s", "peak memory (MiB)", "latency b1 (ms)",
        "latency b32 (ms)", "folder"]
    lines = ["# Model comparison", "",
             "Every model trained on the same data, split, seed, augmentation and epoch budget (only the overrides "
             "shown differ):", "", f"    {command}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [f"`{r['model']}`", r["overrides"] or "-", _fmt(r["accuracy"]), interval_cell(r), _fmt(r["macro_f1"])]
        cells += [_fmt(r.get("mAP"))] if has_map else []
        cells += [f"{r['parameters'] / 1e6:.2f}", _fmt(r["gflops_per_image"], 3), _fmt(r["train_images_per_second"], 1),
                  _fmt(r["peak_memory_mib"], 0), _fmt(r["latency_batch1_ms"], 2), _fmt(r["latency_batch32_ms"], 1),
                  f"[{r['folder']}]({r['folder']})"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    scored = [r for r in rows if r["accuracy"] is not None]
    if scored:
        best = max(scored, key=lambda r: r["accuracy"])
        lines += ["", f"Best eval accuracy: `{best['folder']}` ({best['accuracy']:.4f})."]
    lines += pairs_markdown(pairs or [])
    lines += ["", f"Measured on {device}. Accuracy and macro F1: the run's final evaluation (eval_results.json) on its "
              "eval split (multi-label runs: subset accuracy, macro F1 and mAP over the classes). GFLOPs: one forward "
              "pass of one image at the model's input size, counted by torch.utils.flop_counter. Train images/s: the "
              "Trainer's train_samples_per_second (its time includes the per-epoch evaluations; for a resumed run, "
              "only the resumed part). Peak memory: CUDA max_memory_allocated during training, or the process's peak "
              "resident memory on CPU. Latency: median forward pass of random pixels at batch 1 and 32, in eval mode "
              "(bf16 autocast on GPUs that have it)."]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_plot(rows: list[dict], path: Path) -> Path:
    from vit_pipeline.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    names = [r["folder"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    positions = range(len(rows))
    left.bar([p - 0.2 for p in positions], [r["accuracy"] or 0 for r in rows], width=0.4, label="accuracy")
    left.bar([p + 0.2 for p in positions], [r["macro_f1"] or 0 for r in rows], width=0.4, label="macro F1")
    left.set_xticks(list(positions), names, rotation=20, ha="right", fontsize=8)
    left.set_ylim(0, 1.15)  # room above the bars for the legend
    left.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    left.set_title("eval accuracy and macro F1")
    left.legend(loc="upper center", ncol=2, fontsize=8)
    for r in rows:
        right.scatter(r["latency_batch32_ms"], r["accuracy"] or 0, s=40 + 400 * r["parameters"] / max(
            x["parameters"] for x in rows))
        right.annotate(r["folder"], (r["latency_batch32_ms"], r["accuracy"] or 0), fontsize=8,
                       textcoords="offset points", xytext=(4, 4))
    right.set_xlabel("inference latency at batch 32 (ms)")
    right.set_ylabel("eval accuracy")
    right.set_title("accuracy against latency (marker area: parameters)")
    return save_figure(fig, path)


def main(argv: list[str]) -> list[dict]:
    """`vit-pipeline compare`: train each model with the same recipe, measure them, write the comparison."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        if not argv:
            raise PipelineError("compare needs a RECIPE.yaml, --models and --output_dir")
        return []
    output, runs = _plan_runs(argv)
    # Every run's configuration is checked before the first one trains: a typo in the last override fails now.
    from vit_pipeline.config import RecipeParser

    for name, _, _, run_argv in runs:
        _, _, training_args, _ = RecipeParser(prog="vit-pipeline compare").parse(run_argv)
        if training_args.push_to_hub:
            raise PipelineError(f"compare does not push ({name} and the others would share one repo): set "
                                "--push_to_hub false, then push the folder you choose with vit-pipeline push")
    setup_logging()
    import torch

    from vit_pipeline.evaluation.inference import default_device
    from vit_pipeline.evaluation.significance import PAIRS_CSV, compare_on_same_images, write_pairs_csv

    device = default_device()
    output.mkdir(parents=True, exist_ok=True)
    rows = _train_unclaimed(runs, output, device)
    if rows is None:
        return []

    command = "vit-pipeline compare " + " ".join(argv)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} "\
                                                                                   "threads)"
    pairs = compare_on_same_images(rows, output)  # accuracy intervals into the rows, McNemar's test per pair
    write_csv(rows, output / "comparison.csv")
    write_pairs_csv(pairs, output / PAIRS_CSV)
    write_markdown(rows, output / "comparison.md", command, device_name, pairs)
    write_plot(rows, output / "comparison.png")
    from vit_pipeline.evaluation.explain import write_compare_explanations

    write_compare_explanations(output, [r["folder"] for r in rows])
    logger.info("Comparison of %d models written to %s (comparison.md, comparison.csv, comparison.png)", len(rows),
                output)
    return rows


def _plan_runs(argv: list[str]) -> tuple[Path, list[tuple[str, dict, str, list[str]]]]:
    """compare's own options, checked, and one (model, overrides, folder, train argv) per `--models` entry."""
    own, shared = split_argv(argv, {"models": "many", "output_dir": "one"})
    if not own.get("models"):
        raise PipelineError("compare needs --models M1 M2 ... (Hub ids or folders, each optionally :key=value,...)")
    if not own.get("output_dir"):
        raise PipelineError("compare needs --output_dir C (one folder per model is written under it)")
    if any(a.split("=", 1)[0] == "--model_name_or_path" for a in shared):
        raise PipelineError("compare takes its models from --models: remove --model_name_or_path")
    output = Path(own["output_dir"])
    runs = []
    for spec in own["models"]:
        name, overrides = parse_model_spec(spec)
        folder = run_folder_name(name, overrides)
        flags = [f"--{k}={v}" for k, v in overrides.items()]
        runs.append((name, overrides, folder, [*shared, *flags, "--model_name_or_path", name,
                                               "--output_dir", str(output / folder)]))
    duplicate = next((f for i, (_, _, f, _) in enumerate(runs) if f in [r[2] for r in runs[:i]]), None)
    if duplicate:
        raise PipelineError(f"--models lists the same model and overrides twice ({duplicate}): drop one")
    return output, runs


def _train_and_measure(index: int, total: int, run: tuple[str, dict, str, list[str]], output: Path, device) -> dict:
    """Train one model (or keep its row when an earlier comparison finished it), measure it, and write its row."""
    import torch

    from vit_pipeline.commands.train import main as train
    from vit_pipeline.training.throughput import _peak_memory_mib, _reset_peak_memory

    name, overrides, folder, run_argv = run
    run_dir = output / folder
    if _finished(run_dir):
        row = json.loads((run_dir / ROW_FILE).read_text())
        if row.get("argv") not in (None, run_argv):
            raise PipelineError(f"{run_dir} was trained with other settings ({' '.join(row['argv'])}): use a new "
                                "--output_dir, or delete that folder to train it again")
        logger.info("compare [%d/%d] %s: finished earlier, kept (%s)", index, total, name, run_dir)
        return row
    logger.info("compare [%d/%d] %s%s -> %s", index, total, name,
                f" ({', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else "", run_dir)
    _reset_peak_memory(device)
    train(run_argv)
    peak = _peak_memory_mib(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    row = {"model": name, "overrides": ", ".join(f"{k}={v}" for k, v in overrides.items()), **read_metrics(run_dir),
           "peak_memory_mib": peak, **measure_folder(run_dir, device), "folder": folder, "argv": run_argv}
    # Written last: its presence marks the model finished for a resumed comparison.
    (run_dir / ROW_FILE).write_text(json.dumps(row, indent=2) + "\n")
    return row


def _train_unclaimed(runs: list[tuple[str, dict, str, list[str]]], output: Path, device) -> list[dict] | None:
    """Train, one after another, the models no other worker holds (each folder locked until its row is written).

    Returns:
        Every model's row once all are finished; None while another worker still trains one (the last to finish
        writes the comparison).
    """
    from vit_pipeline.training.claims import claim_next

    folders = [output / folder for _, _, folder, _ in runs]
    while (claimed := claim_next(folders, _finished)) is not None:
        index, lock = claimed
        try:
            _train_and_measure(index + 1, len(runs), runs[index], output, device)
        finally:
            lock.release()
    busy = [folder.name for folder in folders if not _finished(folder)]
    if busy:
        logger.info("compare: %s still training in other workers; the last to finish writes the comparison",
                    ", ".join(busy))
        return None
    return [_train_and_measure(index, len(runs), run, output, device) for index, run in enumerate(runs, 1)]
