"""What each size buys: accuracy against latency, parameters, GFLOPs and file size of a teacher, the student trained
without it, the distilled student and (with the `export` extra) their int8 ONNX exports.

`write_pareto(output_dir, models, eval_dataset, labels)` measures each saved model on the same eval images and writes
`pareto.md`, `pareto.csv` and `pareto.png` into `output_dir`. The measurements reuse `compare`'s (parameters, forward
GFLOPs counted by `torch.utils.flop_counter.FlopCounterMode`, median latency at batch 1 and 32) and `export`'s
(torch.onnx export, ONNX Runtime dynamic int8 quantization, the PyTorch / ONNX parity run that scores both).
"""

from __future__ import annotations

import csv
import logging
import statistics
import tempfile
import time
from pathlib import Path

from vit_pipeline.utils import WEIGHT_FILES

logger = logging.getLogger("vit_pipeline")

COLUMNS = ("model", "runtime", "accuracy", "parameters", "gflops_per_image", "file_size_mb", "latency_batch1_ms",
           "latency_batch32_ms", "folder")
PARETO_FILES = ("pareto.md", "pareto.csv", "pareto.png")


def weights_mb(folder: Path) -> float:
    """Size of the saved weights in MB (10^6 bytes)."""
    return sum((folder / name).stat().st_size for name in WEIGHT_FILES if (folder / name).is_file()) / 1e6


def onnx_latency_ms(session, size: tuple[int, int], batch_size: int, runs: int) -> float:
    """Median wall time of one ONNX Runtime run on a `batch_size` batch of random pixels (after warm-up), in ms."""
    import numpy as np

    pixels = np.random.default_rng(0).standard_normal((batch_size, 3, *size), dtype=np.float32)
    times = []
    for i in range(runs + 2):
        start = time.perf_counter()
        session.run(["logits"], {"pixel_values": pixels})
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def has_export_extra() -> bool:
    """True when onnx and onnxruntime import (the `export` extra)."""
    from vit_pipeline import PipelineError
    from vit_pipeline.commands.export import require_export_extra

    try:
        require_export_extra()
    except PipelineError:
        return False
    return True


def measure_model(name: str, folder: str, eval_dataset, labels: list[int], device, int8: bool) -> list[dict]:
    """The rows of one saved model: PyTorch, and with `int8` its dynamic-int8 ONNX Runtime export."""
    import torch
    from transformers import AutoImageProcessor

    from vit_pipeline.commands.compare import latency_ms
    from vit_pipeline.commands.export import export_with_torch, parity, quantize_dynamic
    from vit_pipeline.data.transforms import image_spec
    from vit_pipeline.model.load import load_classifier
    from vit_pipeline.training.throughput import counted_flops_per_image

    model = load_classifier(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    size = image_spec(processor).output_size
    common = {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
              # counted_flops_per_image counts a training step (3 x forward): one forward pass is a third.
              "gflops_per_image": counted_flops_per_image(model, size) / 3 / 1e9, "folder": str(folder)}
    cpu_runs = {1: 10, 32: 3}
    sessions, onnx_rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        if int8:
            import onnxruntime as ort

            export_with_torch(model, size, Path(tmp) / "model.onnx", opset=17)
            quantize_dynamic(Path(tmp) / "model.onnx", Path(tmp) / "model_int8.onnx")
            sessions["int8"] = ort.InferenceSession(str(Path(tmp) / "model_int8.onnx"),
                                                    providers=["CPUExecutionProvider"])
            onnx_rows.append({**common, "runtime": "ONNX Runtime int8 (CPU)",
                              "file_size_mb": (Path(tmp) / "model_int8.onnx").stat().st_size / 1e6,
                              **{f"latency_batch{b}_ms": onnx_latency_ms(sessions["int8"], size, b, runs)
                                 for b, runs in cpu_runs.items()}})
        scores = parity(model, sessions, eval_dataset, processor, labels, batch_size=32)
    for row in onnx_rows:
        row["accuracy"] = scores["int8"]["accuracy"]
    model.to(device)
    latency = {f"latency_batch{b}_ms": latency_ms(model, size, b, device, runs=runs if device.type == "cpu" else 20)
               for b, runs in cpu_runs.items()}
    device_name = "CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)
    row = {**common, "runtime": f"PyTorch ({device_name})", "accuracy": scores["pytorch"]["accuracy"],
           "file_size_mb": weights_mb(Path(folder)), **latency}
    return [row, *onnx_rows]


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in rows)


def write_markdown(rows: list[dict], path: Path, eval_split: str, int8: bool) -> None:
    lines = ["# What each size buys", "",
             f"Every model scored on the same {eval_split} images; latency of random pixels, median of several runs "
             "after warm-up.", "",
             "| model | runtime | accuracy | parameters (M) | GFLOPs / image | file size (MB) | latency b1 (ms) | "
             "latency b32 (ms) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['runtime']} | {r['accuracy']:.4f} | {r['parameters'] / 1e6:.3f} | "
                     f"{r['gflops_per_image']:.4f} | {r['file_size_mb']:.2f} | {r['latency_batch1_ms']:.2f} | "
                     f"{r['latency_batch32_ms']:.1f} |")
    if not int8:
        lines += ["", "The int8 ONNX rows need the export extra: pip install 'vit-pipeline[export]'."]
    lines += ["", "GFLOPs: one forward pass of one image at the model's input size (torch.utils.flop_counter). File "
              "size: the saved weights (safetensors), or the int8 ONNX file. int8: ONNX Runtime dynamic quantization "
              "of the weights (activations scaled at run time), on the CPU."]
    path.write_text("\n".join(lines) + "\n")


def write_plot(rows: list[dict], path: Path) -> None:
    from vit_pipeline.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, batch in zip(axes, (1, 32), strict=True):
        for r in rows:
            marker = "s" if "int8" in r["runtime"] else "o"
            ax.scatter(r[f"latency_batch{batch}_ms"], r["accuracy"], marker=marker,
                       s=40 + 400 * r["file_size_mb"] / max(x["file_size_mb"] for x in rows))
            label = r["model"] + (" int8" if "int8" in r["runtime"] else "")
            ax.annotate(label, (r[f"latency_batch{batch}_ms"], r["accuracy"]), fontsize=8,
                        textcoords="offset points", xytext=(4, 4))
        ax.set_xscale("log")
        ax.set_xlabel(f"latency at batch {batch} (ms, log scale)")
        ax.set_title(f"accuracy against latency, batch {batch}")
    axes[0].set_ylabel("eval accuracy")
    fig.suptitle("circles: PyTorch; squares: int8 ONNX Runtime; marker area: file size", fontsize=9)
    save_figure(fig, path)


def write_pareto(output_dir: str | Path, models: list[tuple[str, str]], eval_dataset, labels: list[int],
                 eval_split: str = "eval") -> list[dict]:
    """Measure each (name, saved folder) of `models` on `eval_dataset` and write pareto.md, pareto.csv, pareto.png.

    Returns:
        The rows (one per model and runtime).
    """
    from vit_pipeline.evaluation.inference import default_device

    output_dir = Path(output_dir)
    int8 = has_export_extra()
    if not int8:
        logger.warning("pareto: no int8 ONNX rows (the export extra is not installed: pip install "
                       "'vit-pipeline[export]')")
    device = default_device()
    rows = [row for name, folder in models for row in measure_model(name, folder, eval_dataset, labels, device, int8)]
    write_csv(rows, output_dir / "pareto.csv")
    write_markdown(rows, output_dir / "pareto.md", eval_split, int8)
    write_plot(rows, output_dir / "pareto.png")
    logger.info("What each size buys: %s", "; ".join(f"{r['model']} {r['runtime'].split(' (')[0]} accuracy "
                                                      f"{r['accuracy']:.4f}, {r['latency_batch1_ms']:.2f} ms at batch 1"
                                                      for r in rows))
    return rows
