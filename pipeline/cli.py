"""The command line: `vit-pipeline train|push ...`, each subcommand a linear `main()`.

`python -m vit_pipeline` and `accelerate launch -m vit_pipeline` run the same code.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from vit_pipeline import PipelineError

logger = logging.getLogger("vit_pipeline")

USAGE = """usage: vit-pipeline COMMAND [ARGS]

commands:
  train RECIPE.yaml [--field value ...]   fine-tune an image classifier as the recipe says
  push OUTPUT_DIR --hub_model_id ORG/NAME  push a finished output folder to the Hub
  benchmark RECIPE.yaml [--steps N]       measure data, model and end-to-end throughput
  evaluate MODEL --output_dir R [data]    evaluation report: metrics, per class, confusion matrix, calibration
  predict MODEL INPUT... --output F       predictions for image files, folders or globs (.csv/.jsonl/.parquet)
  export MODEL --output_dir E             ONNX export with a parity check on real images (--quantize dynamic)
  explain MODEL IMAGE... --output_dir X   where the model looks: rollout (ViTs), Grad-CAM (every family)
  demo MODEL [--port P] [--write_space DIR] try a model in the browser (Gradio), or write it as a Space
  compare RECIPE --models M1 M2 ... --output_dir C
                                          train several models on the same data; comparison.md/.csv/.png
  search RECIPE --n_trials N --output_dir S [--space SPACE.yaml]
                                          hyperparameter search (optuna, pruning); trials.csv, best_recipe.yaml
  audit [RECIPE] --output_dir A [--model MODEL]
                                          data audit: label issues, duplicates, leakage, outliers, image issues

`vit-pipeline COMMAND --help` lists a command's options."""


# Each command is `vit_pipeline.commands.<name>.main(argv)`, imported only when it runs (start-up stays fast).
COMMANDS = {"train": "train", "push": "push", "benchmark": "benchmark", "evaluate": "evaluate", "predict": "predict",
            "export": "export", "explain": "explain", "demo": "demo", "compare": "compare", "search": "search",
            "audit": "audit"}


def train_main(argv: list[str]) -> dict:
    """`vit-pipeline train` in-process (what tests and notebooks call); see `vit_pipeline.commands.train.main`."""
    from vit_pipeline.commands.train import main as train

    return train(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `vit-pipeline` and `python -m vit_pipeline`."""
    if argv is None:
        _skip_final_collection()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"vit-pipeline: error: unknown command '{command}': use one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    try:
        import importlib

        importlib.import_module(f"vit_pipeline.commands.{COMMANDS[command]}").main(rest)
    except PipelineError as err:
        from vit_pipeline.utils import one_line

        print(f"vit-pipeline: error: {one_line(_own_message(err))}", file=sys.stderr)
        sys.exit(err.exit_code if not _show_traceback() else _reraise(err))
    except KeyboardInterrupt:
        print("vit-pipeline: interrupted; checkpoints already written are kept (the next run resumes from them)",
              file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        # Nobody foresaw this one: one line, and the whole traceback in a file for the bug report.
        if _show_traceback():
            raise
        from vit_pipeline.utils import write_failure

        known = write_failure(err)
        if known is not None:
            # A full disk, a read-only folder, no permission: foreseeable, with its own line.
            print(f"vit-pipeline: error: {known}", file=sys.stderr)
            sys.exit(2)
        where = _save_traceback(err)
        print(f"vit-pipeline: error: unexpected {type(err).__name__}: {_short(err)} "
              f"({where}; VIT_PIPELINE_TRACEBACK=1 prints it)", file=sys.stderr)
        sys.exit(1)


def _skip_final_collection() -> None:
    # A process of its own (the console script, `python -m`): at exit the interpreter's last garbage collection walks
    # every object torch, transformers and their imports made, 0.9 s of every command on the 2-core benchmark machine
    # (0.2 s frozen). Frozen objects are still freed by reference count and the exit handlers (logging's flush,
    # temporary folders) still run; only unreachable cycles are left to the OS. Not for in-process callers (tests,
    # notebooks): their later collections would skip these objects too.
    atexit.register(gc.freeze)


def _show_traceback() -> bool:
    return os.environ.get("VIT_PIPELINE_TRACEBACK", "") not in ("", "0")


def _reraise(err: Exception):
    raise err


def _short(err: BaseException, limit: int = 300) -> str:
    from vit_pipeline.utils import one_line

    text = one_line(err) or "(no message)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _save_traceback(err: BaseException) -> str:
    """Write the full traceback to a file in the temp folder; return where it is (or that it could not be written)."""
    text = "".join(traceback.format_exception(err))
    folder = Path(tempfile.gettempdir()) / "vit-pipeline"
    path = folder / f"traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"vit-pipeline {' '.join(sys.argv[1:])}\n\n{text}")
    except OSError as write_err:
        print(text, file=sys.stderr, end="")
        return f"the traceback is printed above: it could not be written to {path} ({write_err.strerror})"
    return f"full traceback in {path}"


def _own_message(err: PipelineError) -> str:
    """The error's own line: one raised in a DataLoader worker comes back wrapped in the worker's traceback."""
    text = str(err)
    if text.startswith("Caught PipelineError") and "PipelineError: " in text:
        return text.rsplit("PipelineError: ", 1)[1].strip()
    return text
