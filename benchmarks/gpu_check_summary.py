"""The last step of benchmarks/gpu_check.sh: one table and OUT_DIR/gpu_check.json from what the steps wrote.

    python benchmarks/gpu_check_summary.py OUT_DIR [--dry 1] [--seconds N]

Reads OUT_DIR/benchmark.json (`vit-pipeline benchmark --json`) and, for each backend, OUT_DIR/tune-<backend>/
(all_results.json, trainer_state.json). Exits 1 when a fine-tune's eval accuracy did not rise (not checked in the dry
run, whose toy model trains 4 steps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BACKENDS = ("trainer", "accelerate")
# A fine-tune counts as learning when eval accuracy rises by at least this much over the untrained model's.
MIN_RISE = 0.05
TIME_LIMIT_S = 480


def tune_figures(folder: Path, flops_per_image: float, peak_flops: float) -> dict:
    """Whole-run figures of one fine-tune: images/s, MFU, peak memory, accuracy before and after."""
    results = json.loads((folder / "all_results.json").read_text())
    history = json.loads((folder / "trainer_state.json").read_text()).get("log_history", [])
    evals = [h["eval_accuracy"] for h in history if "eval_accuracy" in h]
    rate = float(results.get("train_samples_per_second", 0.0))
    return {
        "images_per_s": rate,
        "mfu": rate * flops_per_image / peak_flops if peak_flops else None,
        "peak_memory_mib": results.get("train_peak_memory_mib"),
        "accuracy_before": evals[0] if evals else None,
        "accuracy_after": results.get("eval_accuracy"),
        "train_runtime_s": results.get("train_runtime"),
        "note": "whole run: compilation, the two evaluations and loader start-up included",
    }


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("out", type=Path)
    cli.add_argument("--dry", default="0")
    cli.add_argument("--seconds", type=int, default=None)
    options = cli.parse_args(argv)
    bench = json.loads((options.out / "benchmark.json").read_text())
    flops, peak = bench["flops_per_image"], bench["device_peak_flops"]
    summary = {
        "dry_run": options.dry == "1",
        "device": bench["device"],
        "image_size": bench["image_size"],
        "flops_per_image": flops,
        "device_peak_flops": peak,
        "device_peak_source": bench["device_peak_source"],
        "benchmark": {name: {k: c[k] for k in ("settings", "data_images_per_s", "model_images_per_s",
                                              "end_to_end_images_per_s", "peak_memory_mib", "mfu_model",
                                              "mfu_end_to_end")}
                      for name, c in bench["configurations"].items()},
        "ratio": bench.get("ratio"),
        "fine_tune": {b: tune_figures(options.out / f"tune-{b}", flops, peak) for b in BACKENDS},
        "seconds": options.seconds,
    }
    failures = []
    for backend, figures in summary["fine_tune"].items():
        before, after = figures["accuracy_before"], figures["accuracy_after"]
        figures["accuracy_rose"] = before is not None and after is not None and after >= before + MIN_RISE
        if not figures["accuracy_rose"] and not summary["dry_run"]:
            failures.append(f"{backend}: eval accuracy {before} -> {after} (must rise by {MIN_RISE})")
    summary["passed"] = not failures
    (options.out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")

    lines = [f"gpu_check on {summary['device']}{' (DRY RUN, toy sizes)' if summary['dry_run'] else ''}",
             f"{bench['image_size'][0]} px, {flops / 1e9:.3g} GFLOP per training image, peak "
             f"{peak / 1e12:.3g} TFLOP/s ({summary['device_peak_source']})", "",
             f"{'':<34}{'images/s':>12}{'MFU':>9}{'peak MiB':>11}"]
    for name, c in summary["benchmark"].items():
        lines.append(f"{'benchmark ' + name + ', model only':<34}{c['model_images_per_s']:>12,.0f}"
                     f"{100 * c['mfu_model']:>8.1f}%{'':>11}")
        lines.append(f"{'benchmark ' + name + ', data only':<34}{c['data_images_per_s']:>12,.0f}")
        lines.append(f"{'benchmark ' + name + ', end to end':<34}{c['end_to_end_images_per_s']:>12,.0f}"
                     f"{100 * c['mfu_end_to_end']:>8.1f}%{c['peak_memory_mib']:>11,.0f}")
        # What the data path leaves of the model's rate: the GPU goal is at least 90%.
        share = c["end_to_end_images_per_s"] / c["model_images_per_s"] if c["model_images_per_s"] else 0.0
        lines.append(f"{'benchmark ' + name + ', end to end / model only':<34}{100 * share:>11.0f}%")
    for backend, f in summary["fine_tune"].items():
        memory = f"{f['peak_memory_mib']:>11,.0f}" if f["peak_memory_mib"] is not None else f"{'-':>11}"
        mfu = f"{100 * f['mfu']:>8.1f}%" if f["mfu"] is not None else f"{'-':>9}"
        lines.append(f"{'fine-tune ' + backend + ' (whole run)':<34}{f['images_per_s']:>12,.0f}{mfu}{memory}"
                     f"   accuracy {f['accuracy_before']:.3f} -> {f['accuracy_after']:.3f}")
    if summary["ratio"]:
        lines.append(f"\nrecipe / reference end to end: {summary['ratio']['end_to_end_images_per_s']:.2f}x")
    if options.seconds is not None:
        lines.append(f"total {options.seconds} s" + (f" (over the {TIME_LIMIT_S} s budget)"
                                                    if options.seconds > TIME_LIMIT_S else ""))
    lines.append(f"written: {options.out / 'gpu_check.json'}")
    lines += [f"FAILED: {f}" for f in failures]
    print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
