"""What a dataset name means: open it as a `DatasetDict` (`load_raw`) or as a stream (`open_stream`).

A Hub id, a local folder laid out like a Hub dataset repo (parquet files or an imagefolder, with or without a README
holding `dataset_info`), a `save_to_disk` folder, WebDataset shards, a `builtin:` dataset, or plain image folders
(`train_dir` / `validation_dir`).
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
from datasets import DatasetDict

from vit_pipeline import PipelineError
from vit_pipeline.data.builtin import BUILTIN_PREFIX, resolve_builtin
from vit_pipeline.utils import first_line, one_line

# File endings read as images in plain folders (what `imagefolder` and `vit-pipeline predict` pick up).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def has_images(folder: str | os.PathLike) -> bool:
    """Whether `folder` (searched recursively) holds at least one file with an image ending."""
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in Path(folder).rglob("*") if p.is_file())


# Split folder names datasets recognizes in a data folder, and the split each becomes (its own naming rules).
SPLIT_FOLDERS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test", "eval": "test",
                 "evaluation": "test"}


def image_split_folders(root: Path) -> dict[str, str] | None:
    """`{split: "root/<folder>/**"}` for a plain local imagefolder (`root/<split>/<class>/<image>`), else None.

    datasets infers the splits of a folder by trying about 45 file patterns, each walking every file: with 20,000
    images that is most of the start-up. A folder that is plainly split folders of images gets one pattern per split
    instead (the splits and labels datasets would infer). Anything else (a README with configs, parquet, WebDataset
    or metadata files, loose files at the top) keeps datasets' own inference.
    """
    if (root / "README.md").exists():
        return None
    entries = list(root.iterdir())
    folders = {e.name.lower(): e for e in entries if e.is_dir() and not e.name.startswith(".")}
    loose = [e for e in entries if e.is_file() and not e.name.startswith(".")]
    if loose or not folders or not set(folders) <= set(SPLIT_FOLDERS):
        return None
    splits: dict[str, str] = {}
    for name, folder in folders.items():
        split = SPLIT_FOLDERS[name]
        # A few entries of each split show what it holds: images in class folders, nothing datasets reads otherwise.
        sample = [p for _, p in zip(range(50), folder.rglob("*"), strict=False) if p.is_file()]
        if split in splits or not sample or any(p.suffix.lower() not in IMAGE_EXTENSIONS for p in sample):
            return None
        splits[split] = str(folder / "**")
    return splits


def _resolve_builtin_name(name: str) -> str:
    """The folder a `builtin:` name stands for (written on first use), else the name itself."""
    return str(resolve_builtin(name)) if name.startswith(BUILTIN_PREFIX) else name


def _saved_splits(name: str) -> DatasetDict | None:
    """The splits of a `save_to_disk` folder (a single saved `Dataset` becomes `train`), else None."""
    local = Path(name)
    if not (local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists())):
        return None
    loaded = datasets.load_from_disk(str(local))
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


def load_raw(data_args, cache_dir: str | None = None, token: str | None = None) -> DatasetDict:
    """Load the dataset named by `data_args` as a `DatasetDict`, without touching its columns.

    Raises:
        PipelineError: the dataset cannot be found or loaded (with what to check).
    """
    name = data_args.dataset_name
    try:
        if name is None:
            data_files = {"train": os.path.join(data_args.train_dir, "**")}
            if data_args.validation_dir:
                data_files["validation"] = os.path.join(data_args.validation_dir, "**")
            for folder in filter(None, (data_args.train_dir, data_args.validation_dir)):
                if not Path(folder).is_dir():
                    raise PipelineError(f"image folder {folder} does not exist: check train_dir / validation_dir")
                if not has_images(folder):
                    raise PipelineError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} files, "
                                        "in one subfolder per class): check train_dir / validation_dir")
            return datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
        name = _resolve_builtin_name(name)
        saved = _saved_splits(name)
        if saved is not None:
            return saved
        local = Path(name)
        split_folders = image_split_folders(local) if local.is_dir() else None
        if split_folders:
            return datasets.load_dataset("imagefolder", data_files=split_folders, cache_dir=cache_dir)
        return datasets.load_dataset(
            name,
            data_args.dataset_config_name,
            revision=data_args.dataset_revision,
            cache_dir=cache_dir,
            token=token,
        )
    except PipelineError:
        raise
    except Exception as err:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, HTTP, ...)
        where = name or data_args.train_dir
        hint = (
            "check the path"
            if name is None or Path(name).exists()
            else "check the dataset id and config, your network (or HF_HUB_OFFLINE), and HF_TOKEN for gated data"
        )
        cause = err.__cause__
        if isinstance(err, datasets.exceptions.DatasetGenerationError) and isinstance(cause, (TypeError, ValueError)):
            # The real reason is in the cause: usually a split whose column types differ from the first split's.
            raise PipelineError(f"cannot load dataset '{where}': {type(cause).__name__}: {one_line(cause)}; the "
                                "splits' columns have different types (lists of labels in one split, single labels "
                                "in another?): give every split the same types") from err
        raise PipelineError(f"cannot load dataset '{where}': {type(err).__name__}: {first_line(err)}; {hint}") from err


def open_stream(data_args, token: str | None = None) -> datasets.IterableDatasetDict:
    """Open the dataset named by `data_args` as an `IterableDatasetDict` (nothing downloaded beyond what is read).

    Raises:
        PipelineError: the dataset cannot be found or opened.
    """
    name = data_args.dataset_name
    try:
        if name is None:
            files = {"train": str(Path(data_args.train_dir) / "**")}
            if data_args.validation_dir:
                files["validation"] = str(Path(data_args.validation_dir) / "**")
            return datasets.load_dataset("imagefolder", data_files=files, streaming=True)
        name = _resolve_builtin_name(name)
        saved = _saved_splits(name)
        if saved is not None:
            # A save_to_disk folder is already on disk: stream it shard by shard all the same.
            return datasets.IterableDatasetDict({
                split: ds.to_iterable_dataset(num_shards=max(1, min(64, len(ds) // 256)))
                for split, ds in saved.items()})
        return datasets.load_dataset(name, data_args.dataset_config_name, revision=data_args.dataset_revision,
                                     token=token, streaming=True)
    except PipelineError:
        raise
    except Exception as err:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, HTTP, ...)
        where = name or data_args.train_dir
        raise PipelineError(f"cannot stream dataset '{where}': {type(err).__name__}: {first_line(err)}; check the "
                            "path or dataset id, your network (or HF_HUB_OFFLINE), and HF_TOKEN for gated data"
                            ) from err
