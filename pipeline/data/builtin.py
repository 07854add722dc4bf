"""The embedded default data set: scikit-learn's 1,797 handwritten digits, written once as an imagefolder.

The digits ship inside scikit-learn, so the quickstart runs with no network. They are written as real PNG files
(`<root>/train/<digit>/<n>.png`), the layout of a Hub imagefolder dataset, and then loaded through the same
`datasets.load_dataset` path as any other folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS = ("digits",)
_DONE_MARKER = ".complete"


def builtin_root() -> Path:
    """Where built-in data sets are written: `$VIT_PIPELINE_CACHE` or `$HF_HOME/vit-pipeline`."""
    if "VIT_PIPELINE_CACHE" in os.environ:
        return Path(os.environ["VIT_PIPELINE_CACHE"])
    hf_home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return Path(hf_home) / "vit-pipeline"


def write_digits(root: str | os.PathLike) -> Path:
    """Write scikit-learn's digits as an imagefolder under `root` (once) and return the folder.

    Each 8x8 image (values 0..16) becomes an 8-bit grayscale PNG in `train/<digit>/`. The write goes to a temporary
    folder that is renamed into place, so an interrupted write never leaves a half data set behind.
    """
    folder = Path(root) / "digits"
    if (folder / _DONE_MARKER).exists():
        return folder
    # Imported only to write the folder once: scikit-learn takes seconds to import.
    from sklearn.datasets import load_digits

    digits = load_digits()
    tmp = folder.with_name(f"digits.tmp-{os.getpid()}")
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        class_dir = tmp / "train" / str(target)
        class_dir.mkdir(parents=True, exist_ok=True)
        # 0..16 -> 0..255: the full 8-bit range, as a scanned digit would be stored.
        array = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)
        Image.fromarray(array, mode="L").save(class_dir / f"{i:04d}.png")
    (tmp / _DONE_MARKER).write_text("scikit-learn digits\n")
    try:
        tmp.rename(folder)
    except OSError:
        # Another process wrote it first (a multi-process launch): theirs is complete, drop ours.
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_builtin(name: str) -> Path:
    """Turn `builtin:digits` into the local folder holding it, writing it on first use."""
    key = name[len(BUILTIN_PREFIX) :]
    if key not in BUILTIN_DATASETS:
        from vit_pipeline import PipelineError

        raise PipelineError(f"unknown built-in dataset '{name}': use one of " + ", ".join(
            BUILTIN_PREFIX + n for n in BUILTIN_DATASETS))
    return write_digits(builtin_root())
