"""The image check (`verify_images`): decode every image once before training; stop on unreadable ones or drop them
(`bad_images`)."""

from __future__ import annotations

import io
import logging
import time

import datasets
import numpy as np
from datasets import Dataset
from PIL import Image

from vit_pipeline import PipelineError
from vit_pipeline.utils import cpu_count, first_line

logger = logging.getLogger(__name__)


def check_image(source) -> None:
    """Decode one image (a path or a file object) far enough to know it is readable; raise what PIL raises if not.

    JPEGs are decoded at 1/8 scale: that reads and checks the whole entropy-coded stream (a truncated or corrupt file
    still fails) for a fraction of the cost of full-size pixels.
    """
    with Image.open(source) as image:
        if image.format == "JPEG":
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()


def _check_batch(batch: dict) -> dict:
    ok, errors = [], []
    for item in batch["image"]:
        try:
            if item is None:
                raise ValueError("empty cell")
            check_image(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"])
            ok.append(True)
            errors.append("")
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            ok.append(False)
            errors.append(f"{type(err).__name__}: {first_line(err)}")
    return {"ok": ok, "error": errors}


# Checks of more images than this say up front how long they will take (smaller ones take seconds).
ESTIMATE_ABOVE = 2000
ESTIMATE_SAMPLE = 64


def _log_check_estimate(raw: Dataset, split: str, num_proc: int | None) -> None:
    """Log how long checking `raw` will take, timed on its first images (the progress bar's ETA, said up front)."""
    if len(raw) < ESTIMATE_ABOVE:
        return
    sample = raw.select(range(ESTIMATE_SAMPLE))[:]
    started = time.time()
    _check_batch(sample)
    rate = ESTIMATE_SAMPLE / max(time.time() - started, 1e-6) * (num_proc or 1)
    logger.info("Checking %d %s images (each decoded once): about %.0f s at %.0f images/s", len(raw), split,
                len(raw) / rate, rate)


def find_bad_images(ds: Dataset, split: str, num_proc: int | None = None) -> list[tuple[int, str, str]]:
    """Decode every image of `ds` once and return the unreadable ones as (row, file, error)."""
    raw = ds.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    if num_proc is None:
        # Worker processes pay off only on larger sets; tiny ones check faster in-process.
        num_proc = min(cpu_count(), 8) if len(ds) > 5000 else None
    _log_check_estimate(raw, split, num_proc)
    started = time.time()
    flags = raw.map(_check_batch, batched=True, batch_size=256, remove_columns=["image"], num_proc=num_proc,
                    desc=f"Checking {split} images")
    if len(raw) >= ESTIMATE_ABOVE:
        logger.info("Checked %d %s images in %.0f s", len(raw), split, time.time() - started)
    ok = np.asarray(flags["ok"][:], dtype=bool)
    bad = []
    for row in np.flatnonzero(~ok):
        item = raw[int(row)]["image"] or {}
        bad.append((int(row), item.get("path") or "embedded bytes", flags[int(row)]["error"]))
    return bad


def check_images(named: dict[str, Dataset], policy: str, num_proc: int | None = None
                 ) -> tuple[dict[str, Dataset], dict[str, int]]:
    """Decode every image of every split once; stop on unreadable ones, or drop them when `policy` is "skip".

    Returns:
        The splits without unreadable rows, and how many were dropped from each.

    Raises:
        PipelineError: with policy "error", naming the split, row and file of the first unreadable image and how
            many there are in all.
    """
    bad = {split: find_bad_images(ds, split, num_proc) for split, ds in named.items()}
    total = sum(len(rows) for rows in bad.values())
    if total and policy == "error":
        split, (row, where, error) = next((s, rows[0]) for s, rows in bad.items() if rows)
        raise PipelineError(f"unreadable image in split '{split}', row {row} ({where}): {error}; "
                            f"{total} bad in all: fix or remove them, or set bad_images: skip")
    for split, rows in bad.items():
        if rows:
            logger.warning("Skipping %d unreadable image(s) in split '%s' (first: row %d, %s)", len(rows), split,
                           rows[0][0], rows[0][1])
    kept = {split: ds.select(sorted(set(range(len(ds))) - {r for r, *_ in bad[split]})) if bad[split] else ds
            for split, ds in named.items()}
    return kept, {split: len(rows) for split, rows in bad.items() if rows}
