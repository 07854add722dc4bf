"""Run a trained classifier over a dataset: batched, on the GPU in bf16 when there is one, with the pipeline's
own eval transforms, so the logits are the ones `pipeline("image-classification")` computes on the same images.

Also loads a trained model and its image processor from an output folder or a Hub id, and matches a dataset's
label names to the model's `id2label`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from vit_pipeline import PipelineError
from vit_pipeline.utils import is_hub_id

logger = logging.getLogger(__name__)


def load_trained(name: str, token: str | None = None, revision: str = "main", attn_implementation: str | None = None):
    """Load a trained image classifier and its image processor from an output folder or a Hub id.

    Args:
        name: a `vit-pipeline train` output folder (any `save_pretrained` folder) or an `org/name` Hub id.
        token: Hub token for private repos.
        revision: branch, tag or commit on the Hub.
        attn_implementation: attention kernel to load with (None: the model's default).

    Returns:
        (model in eval mode, image processor).

    Raises:
        PipelineError: no such folder or id, a folder without a trained model, or a checkpoint that cannot load.
    """
    from vit_pipeline.config.arguments import ModelArguments
    from vit_pipeline.model.load import WEIGHT_FILES, load_classifier, load_image_processor

    local = Path(name)
    if not local.exists() and not is_hub_id(name):
        raise PipelineError(f"no model '{name}': give a `vit-pipeline train` output folder or a Hub id (org/name)")
    if local.is_dir() and (not (local / "config.json").is_file()
                           or not any((local / f).is_file() for f in WEIGHT_FILES)):
        raise PipelineError(f"'{name}' holds no trained model (config.json and model.safetensors): give the "
                            "output_dir of a finished `vit-pipeline train` run")
    if local.exists() and not local.is_dir():
        raise PipelineError(f"'{name}' is a file, not a model folder: give the output_dir of a training run")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # the per-tensor "Loading weights" bar
    model = load_classifier(name, token=token, revision=revision, attn_implementation=attn_implementation)
    processor = load_image_processor(ModelArguments(model_name_or_path=name, model_revision=revision), token=token)
    return model, processor


def model_labels(model) -> list[str]:
    """The model's class names, in label-id order (`config.id2label`)."""
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(len(id2label))]


def match_labels(dataset_labels: list[str], model) -> list[int]:
    """Map each dataset label (by name) to the model's label id.

    Raises:
        PipelineError: a dataset label the model does not know, named, with the model's labels.
    """
    names = model_labels(model)
    index = {name: i for i, name in enumerate(names)}
    unknown = [label for label in dataset_labels if str(label) not in index]
    if unknown:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise PipelineError(f"label '{unknown[0]}' of the dataset is not one the model knows (its labels: {shown}): "
                            "evaluate on data with the model's classes, or drop those rows")
    return [index[str(label)] for label in dataset_labels]


def default_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device):
    # bf16 on GPUs that have it (the logits are returned in float32); full precision elsewhere.
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loader_workers(rows: int, batch_size: int) -> int:
    """Loader worker processes for inference over `rows` images: on a GPU host one per core (up to 16), since decoding
    is most of the work and a forward pass a small part; none for a batch or two, where starting workers costs more
    than it saves; none on a CPU-only machine, where the batch's images are decoded on threads of this process
    (`decode_threads`) between forward passes that use every core anyway."""
    from vit_pipeline.utils import cpu_count

    if not torch.cuda.is_available():
        return 0
    return min(16, cpu_count()) if rows > 2 * batch_size else 0


def decode_threads(workers: int) -> int:
    """Threads that decode each batch's images: one per core (up to 16) in this process when no loader worker
    does it, else one in each worker."""
    from vit_pipeline.utils import cpu_count

    return 1 if workers else min(16, cpu_count())


def batches(dataset, image_processor, batch_size: int = 32, device=None, progress: bool = False,
            num_workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The eval batches of `dataset` as the model receives them: (float pixel_values on `device`, labels).

    `dataset` has the canonical `image` column (and `label`, else every label is -1); it goes through the pipeline's
    eval path (`fast_dataset`: decode, resize and crop to uint8, then `PixelNormalizer` on the device), which
    equals the image processor's output. `num_workers` None: `loader_workers`; without workers the images of each
    batch are decoded on `decode_threads` threads.
    """
    from torch.utils.data import DataLoader

    from vit_pipeline.data.prepare import fast_dataset
    from vit_pipeline.data.transforms import PixelNormalizer, build_fast_transforms, collate, image_spec

    if "label" not in dataset.column_names:
        dataset = dataset.add_column("label", [-1] * len(dataset))
    device = torch.device(device) if device is not None else default_device()
    workers = loader_workers(len(dataset), batch_size) if num_workers is None else num_workers
    transform = build_fast_transforms(image_processor)[1]  # the default data arguments' eval steps
    prepared = fast_dataset(dataset, transform, threads=decode_threads(workers))
    normalizer = PixelNormalizer(image_spec(image_processor)).to(device)
    loader = DataLoader(prepared, batch_size=batch_size, collate_fn=collate, num_workers=workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="Predicting", unit="batch")
    for batch in loader:
        yield normalizer(batch["pixel_values"].to(device, non_blocking=True)), batch["labels"]


@torch.no_grad()
def predict_logits(model, dataset, image_processor, batch_size: int = 32, device=None, progress: bool = False,
                   num_workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run `model` over `dataset` (canonical `image` / `label` columns, as `load_splits` gives them).

    Args:
        model: an image classifier (moved to `device` and put in eval mode).
        dataset: a `datasets.Dataset` with an `image` column and optionally `label`.
        image_processor: the model's image processor (size, crop, mean, std).
        batch_size: images per forward pass.
        device: where to run (default: the GPU when there is one, in bf16 where it has it; else the CPU in fp32).
        progress: show a progress bar.

    Returns:
        (logits float32 [n, num_labels], labels int64 [n]; -1 where the dataset has no label).
    """
    device = torch.device(device) if device is not None else default_device()
    model = model.to(device).eval()
    all_logits, all_labels = [], []
    for pixel_values, labels in batches(dataset, image_processor, batch_size, device, progress, num_workers):
        with _autocast(device):
            logits = model(pixel_values=pixel_values).logits
        all_logits.append(logits.float().cpu().numpy())
        all_labels.append(labels.numpy())
    num_labels = model.config.num_labels
    if not all_logits:
        return np.zeros((0, num_labels), dtype=np.float32), np.zeros((0,), dtype=np.int64)
    return np.concatenate(all_logits), np.concatenate(all_labels).astype(np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (what `pipeline()` reports as scores)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def image_ids(dataset) -> tuple[list[str], str]:
    """A name per row for reports: (file paths, "path") when every row has its own file, else (row numbers, "row")."""
    import datasets

    feature = dataset.features.get("image")
    if isinstance(feature, datasets.Image):
        cells = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))["image"][:]
        paths = [(cell or {}).get("path") for cell in cells]
        if paths and all(paths) and len(set(paths)) == len(paths):
            return [str(p) for p in paths], "path"
    return [str(i) for i in range(len(dataset))], "row"
