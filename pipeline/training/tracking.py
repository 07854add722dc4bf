"""The resolved recipe in the trackers: what `recipe.yaml` holds, logged once when training starts, on both backends.

The trackers' own integrations log the training arguments only (TensorBoard: the Trainer's `args` text or
accelerate's hparams; trackio: the run config). A run's model and data options (checkpoint, dataset, image size,
augmentation, LoRA, ...) are hyperparameters too: `RecipeToTrackers` adds the whole resolved recipe, as a YAML text
summary `recipe` in the run's TensorBoard folder and as `recipe/<key>` entries of the trackio run config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from transformers import TrainerCallback

RECIPE_TAG = "recipe"


def _run_folder(args) -> Path | None:
    """The TensorBoard folder the run writes to (made by the integration when training began), or None."""
    if os.environ.get("TENSORBOARD_LOGGING_DIR"):
        return Path(os.environ["TENSORBOARD_LOGGING_DIR"]).expanduser()
    runs = Path(args.output_dir) / "runs"
    folders = [p for p in runs.iterdir() if p.is_dir()] if runs.is_dir() else []
    return max(folders, key=lambda p: p.stat().st_mtime) if folders else None


class RecipeToTrackers(TrainerCallback):
    """Log the resolved recipe once, at the start of training, to the TensorBoard and trackio runs of `report_to`.

    Args:
        recipe: the resolved recipe (`config.resolved_recipe`: every option of the run, no token).
    """

    def __init__(self, recipe: dict):
        self.recipe = recipe
        self.logged = False

    def on_train_begin(self, args, state, control, **kwargs):
        if self.logged or not state.is_world_process_zero:
            return
        self.logged = True
        report_to = args.report_to or []
        if "tensorboard" in report_to and (folder := _run_folder(args)) is not None:
            from torch.utils.tensorboard import SummaryWriter

            # A second event file in the run's folder: TensorBoard shows it as part of the same run.
            writer = SummaryWriter(log_dir=str(folder))
            # As recipe.yaml writes it (JSON types: tuples become lists).
            text = yaml.safe_dump(json.loads(json.dumps(self.recipe, default=str)), sort_keys=False)
            writer.add_text(RECIPE_TAG, "```yaml\n" + text + "```", global_step=state.global_step)
            writer.close()
        if "trackio" in report_to:
            import trackio

            plain = {f"{RECIPE_TAG}/{k}": v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
                     for k, v in self.recipe.items()}
            trackio.config.update(plain, allow_val_change=True)


def untrack(trainer) -> None:
    """Remove a `Trainer`'s tracker integrations (`report_to`), once training is over and they have finished."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    integrations = tuple(INTEGRATION_TO_CALLBACK.values())
    for callback in list(trainer.callback_handler.callbacks):
        if isinstance(callback, integrations):
            trainer.remove_callback(callback)
