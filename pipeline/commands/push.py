"""`vit-pipeline push OUTPUT_DIR --hub_model_id ORG/NAME`: publish a finished output folder (no torch needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vit_pipeline import PipelineError
from vit_pipeline.publish.push import (
    STRATEGIES,
    PushResult,
    files_to_push,
    push_later_command,
    push_or_explain,
)
from vit_pipeline.utils import CommandParser, parse_bool, setup_logging


def push_parser() -> argparse.ArgumentParser:
    """The parser of `vit-pipeline push` (option names as in `vit-pipeline train`)."""
    parser = CommandParser(prog="vit-pipeline push",
                             description="Push a finished output folder to the Hugging Face Hub (one commit).")
    parser.add_argument("output_dir", help="Output folder of a `vit-pipeline train` run.")
    parser.add_argument("--hub_model_id", help="Repo to push to, ORG/NAME (default: hub_model_id of the folder's "
                        "recipe.yaml).")
    parser.add_argument("--hub_token", help="Token with write access (default: HF_TOKEN, else `hf auth login`).")
    parser.add_argument("--hub_private_repo", nargs="?", const=True, default=False, type=parse_bool,
                        help="Create the repo private (applies when the push creates it).")
    parser.add_argument("--hub_revision", help="Branch to push to; created from main when it does not exist.")
    parser.add_argument("--hub_strategy", default="end", choices=STRATEGIES,
                        help="end / every_save: the model only; checkpoint: also the last checkpoint as "
                        "last-checkpoint/; all_checkpoints: also every checkpoint-N/.")
    parser.add_argument("--commit_message", help="Commit message (default: 'Upload NAME with vit-pipeline').")
    return parser


def _recipe_repo_id(output_dir: str) -> str | None:
    import yaml

    path = Path(output_dir) / "recipe.yaml"
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    return recipe.get("hub_model_id") if isinstance(recipe, dict) else None


def _check_not_training(output_dir: str) -> None:
    """Refuse a folder a training run is still writing (its lock holds a live pid): it would push a half-run."""
    import socket

    from vit_pipeline.utils import LOCK_FILE, lock_holder, pid_alive

    holder = lock_holder(output_dir)
    if holder and holder[0] == socket.gethostname() and pid_alive(holder[1]):
        raise PipelineError(f"{output_dir} is in use by a training run (pid {holder[1]}, lock "
                            f"{Path(output_dir) / LOCK_FILE}): push it once that run has finished")


def main(argv: list[str]) -> PushResult:
    """`vit-pipeline push OUTPUT_DIR --hub_model_id ORG/NAME [--hub_token T] [--hub_private_repo]
    [--hub_revision BRANCH] [--hub_strategy S] [--commit_message M]`: publish a finished output folder."""
    args = push_parser().parse_args(argv)
    setup_logging()
    _check_not_training(args.output_dir)
    files_to_push(args.output_dir, args.hub_strategy)  # a missing or unfinished folder is the first thing to say
    repo_id = args.hub_model_id or _recipe_repo_id(args.output_dir)
    if not repo_id:
        example = push_later_command(args.output_dir, None)
        raise PipelineError(f"no repo to push to: pass --hub_model_id ORG/NAME ({example})")
    result = push_or_explain(args.output_dir, repo_id, token=args.hub_token, private=args.hub_private_repo,
                             revision=args.hub_revision, commit_message=args.commit_message,
                             strategy=args.hub_strategy)
    print(f"Pushed {args.output_dir} to {result.commit_url}")
    return result


