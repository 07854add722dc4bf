"""The command line: `vit-pipeline train|push ...`, each subcommand a linear `main()`.

`python -m pipeline` and `accelerate launch -m pipeline` run the same code.
"""

from __future__ import annotations

import logging
import os
import sys

from pipeline import PipelineError

logger = logging.getLogger("pipeline")

USAGE = """usage: vit-pipeline COMMAND [ARGS]

commands:
  train RECIPE.yaml [--field value ...]   fine-tune a ViT checkpoint as the recipe says
  push OUTPUT_DIR --hub_model_id ORG/NAME  push a finished output folder to the Hub
  benchmark RECIPE.yaml [--steps N]       measure data, model and end-to-end throughput

`vit-pipeline COMMAND --help` lists a command's options."""


# Each command is `pipeline.commands.<name>.main(argv)`, imported only when it runs (start-up stays fast).
COMMANDS = {"train": "train", "push": "push", "benchmark": "benchmark"}


def train_main(argv: list[str]) -> dict:
    """`vit-pipeline train` in-process (what tests and notebooks call); see `pipeline.commands.train.main`."""
    from pipeline.commands.train import main as train

    return train(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `vit-pipeline` and `python -m pipeline`."""
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

        importlib.import_module(f"pipeline.commands.{COMMANDS[command]}").main(rest)
    except PipelineError as err:
        print(f"vit-pipeline: error: {err}", file=sys.stderr)
        sys.exit(2 if os.environ.get("VIT_PIPELINE_TRACEBACK") is None else _reraise(err))
    except KeyboardInterrupt:
        print("vit-pipeline: interrupted; checkpoints already written are kept (the next run resumes from them)",
              file=sys.stderr)
        sys.exit(130)


def _reraise(err: Exception):
    raise err
