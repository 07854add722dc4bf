"""What a push publishes from an output folder: an allow-list of files (weights found through their index, never a
pickle), checkpoints only when a hub strategy asks, and the model card as rendered for the repo id. No torch here."""

from __future__ import annotations

import os
import re
from pathlib import Path

from vit_pipeline import PipelineError
from vit_pipeline.utils import ADAPTER_WEIGHT_FILE, SAFE_WEIGHT_FILES, checkpoints

# What a finished output folder publishes (see README "Publish to the Hub"). Sharded weights are found through
# their index; adapter files are there for LoRA runs, which save an adapter next to (or instead of) the weights.
PUSHED_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "adapter_config.json",
    "config.json",
    "preprocessor_config.json",
    "README.md",
    "recipe.yaml",
    "train_results.json",
    "eval_results.json",
    "all_results.json",
    # The evaluation report and the figures the card shows (referenced by relative paths).
    "eval_report.json",
    "eval_report.md",
    "confusion_matrix.png",
    "reliability_diagram.png",
    "misclassified.png",
    "training_curves.png",
    "explanation_maps.png",
    "explain_report.json",
    "pr_curves.png",
    # Multi-label runs: the per-class thresholds tuned on the eval split (`vit-pipeline predict` reads them).
    "thresholds.json",
    # Distillation runs with baseline: what each size buys (the baseline student's folder itself stays local).
    "pareto.md",
    "pareto.csv",
    "pareto.png",
    # The test split's scores and report (the card's model-index figures and the files it names).
    "test_results.json",
    "test/test_report.json",
    "test/test_report.md",
    "test/confusion_matrix.png",
    "test/reliability_diagram.png",
    "test/pr_curves.png",
)
# The weights a push publishes: safetensors only (never a pickle), and a LoRA adapter's.
PUSHED_WEIGHT_FILES = (*SAFE_WEIGHT_FILES, ADAPTER_WEIGHT_FILE)
# Files of the model itself, pushed to the repo root by the every_save / checkpoint strategies while training.
MODEL_FILES = (*PUSHED_WEIGHT_FILES, "adapter_config.json", "config.json", "preprocessor_config.json")
# Never pushed, even inside a checkpoint folder: the pickled TrainingArguments are not needed to resume and a
# pickle is unsafe to load from someone else's repo.
NEVER_PUSHED = ("training_args.bin",)
# Root-level weight files a new push replaces: left behind, a stale `model.safetensors` would shadow new shards.
STALE_WEIGHTS_RE = re.compile(r"^(model\.safetensors|model\.safetensors\.index\.json|model-\d+-of-\d+\.safetensors)$")
USAGE_RE = re.compile(r'(pipeline\("image-classification", model=")([^"]*)("\))')
LOCAL_USAGE_ID = "path/to/output_dir"


def _weights_of(folder: Path) -> list[str]:
    """Weight files of a saved model in `folder`, shards found through their index."""
    import json

    names = [name for name in PUSHED_WEIGHT_FILES if (folder / name).is_file()]
    if "model.safetensors.index.json" in names:
        try:
            index = json.loads((folder / "model.safetensors.index.json").read_text())
            names += sorted(set(index["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            raise PipelineError(f"{folder / 'model.safetensors.index.json'} is not a valid weight index: save the "
                                "model again (save_pretrained)") from None
    return names


def _checkpoint_files(checkpoint: Path, path_in_repo: str) -> dict[str, Path]:
    """Everything a run needs to resume from `checkpoint` (optimizer, scheduler, RNG, trainer state), as repo paths."""
    return {f"{path_in_repo}/{p.relative_to(checkpoint).as_posix()}": p for p in sorted(checkpoint.rglob("*"))
            if p.is_file() and p.name not in NEVER_PUSHED}


def files_to_push(output_dir: str | os.PathLike, strategy: str = "end") -> dict[str, Path]:
    """The files of a finished output folder that a push publishes, as `{path in repo: local path}`.

    The allow-list `PUSHED_FILES` (plus weight shards named by their index). Checkpoints only when `strategy` asks:
    `checkpoint` adds the last one as `last-checkpoint/`, `all_checkpoints` adds every `checkpoint-N/`.

    Raises:
        PipelineError: the folder is missing or holds no trained model (no config.json or no weights).
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        raise PipelineError(f"output folder {folder} does not exist: name the output_dir a `vit-pipeline train` "
                            "run wrote")
    weights = _weights_of(folder)
    if not (folder / "config.json").is_file() or not weights:
        raise PipelineError(f"{folder} holds no trained model (config.json and model.safetensors): push the "
                            "output_dir of a finished `vit-pipeline train` run")
    missing = [name for name in weights if not (folder / name).is_file()]
    if missing:
        raise PipelineError(f"{folder} is missing weight shard(s) {', '.join(missing)} named by its index: "
                            "the save was interrupted; train again or restore the shards")
    names = [name for name in PUSHED_FILES if (folder / name).is_file()] + [w for w in weights
                                                                             if w not in PUSHED_FILES]
    files = {name: folder / name for name in names}
    found = checkpoints(folder)
    if strategy == "checkpoint" and found:
        files.update(_checkpoint_files(found[-1], "last-checkpoint"))
    elif strategy == "all_checkpoints":
        for checkpoint in found:
            files.update(_checkpoint_files(checkpoint, checkpoint.name))
    return files


def card_for_repo(card_text: str, repo_id: str, folder_name: str) -> str:
    """The model card as rendered for `repo_id`: its usage snippet loads `repo_id`, and a model name the
    pipeline derived (the folder name, or an earlier repo id) becomes `repo_id`.

    What `render_card` produces with `CardInputs.hub_model_id=repo_id` and `model_name=repo_id`; the rest of the
    card (metrics, hyperparameters, framework versions of the training run) is kept as written. A card that is
    already right comes back unchanged, byte for byte.
    """
    from huggingface_hub import ModelCard

    match = USAGE_RE.search(card_text)
    old_usage = match.group(2) if match else None
    card = ModelCard(card_text, ignore_metadata_errors=True)
    old_name = card.data.model_name
    derived = {folder_name, old_usage} - {None, LOCAL_USAGE_ID}
    rename = old_name is not None and old_name != repo_id and old_name in derived
    if old_usage in (None, repo_id) and not rename:
        return card_text
    text = card.text
    if old_usage is not None:
        text = USAGE_RE.sub(lambda m: f"{m.group(1)}{repo_id}{m.group(3)}", text)
    if rename:
        card.data.model_name = repo_id
        text = re.sub(rf"^# {re.escape(old_name)}$", lambda _: f"# {repo_id}", text, count=1, flags=re.MULTILINE)
    card.text = text
    return str(card)
