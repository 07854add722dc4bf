"""The image check (`verify_images`): decode every image once before training; stop on unreadable ones or drop them
(`bad_images`). While it decodes, it takes a digest of every image's pixels (`duplicates.pixel_digest`), from which
exact duplicates are counted with no decoding pass of their own. `count_serve_skew` counts the images
`transformers.pipeline()` reads differently from training."""

from __future__ import annotations

import io
import logging
import time
from collections import Counter

import datasets
import numpy as np
from datasets import Dataset
from PIL import Image

from vit_pipeline import PipelineError
from vit_pipeline.data.duplicates import pixel_digest
from vit_pipeline.data.fingerprint import pass_fingerprint
from vit_pipeline.utils import cpu_count, first_line

logger = logging.getLogger(__name__)


def check_image(source, digest: bool = False) -> str:
    """Decode one image (a path or a file object) far enough to know it is readable; raise what PIL raises if not.

    JPEGs are decoded at 1/8 scale: that reads and checks the whole entropy-coded stream (a truncated or corrupt file
    still fails) for a fraction of the cost of full-size pixels.

    Returns:
        With `digest`, the decoded pixels' digest (`duplicates.pixel_digest`, marked as a draft for a JPEG); else "".
    """
    with Image.open(source) as image:
        draft = image.format == "JPEG"
        if draft:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        return pixel_digest(image.tobytes(), image.size, image.mode, draft=draft) if digest else ""


def _check_batch(batch: dict) -> dict:
    ok, errors, digests = [], [], []
    for item in batch["image"]:
        try:
            if item is None:
                raise ValueError("empty cell")
            digests.append(check_image(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"],
                                       digest=True))
            ok.append(True)
            errors.append("")
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            ok.append(False)
            errors.append(f"{type(err).__name__}: {first_line(err)}")
            digests.append("")
    return {"ok": ok, "error": errors, "digest": digests}


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


def check_workers(num_proc: int | None, rows: int) -> int | None:
    """Processes for a pass over `rows` images: as set, else up to 8 cores above 5,000 images (worker processes pay
    off only on larger sets; tiny ones check faster in-process)."""
    if num_proc is None:
        return min(cpu_count(), 8) if rows > 5000 else None
    return num_proc


def find_bad_images(ds: Dataset, split: str, num_proc: int | None = None, digests: list[str] | None = None
                    ) -> list[tuple[int, str, str]]:
    """Decode every image of `ds` once and return the unreadable ones as (row, file, error).

    `digests`, when given, gets every row's pixel digest ("" for an unreadable one).
    """
    raw = ds.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    num_proc = check_workers(num_proc, len(ds))
    _log_check_estimate(raw, split, num_proc)
    started = time.time()
    flags = raw.map(_check_batch, batched=True, batch_size=256, remove_columns=["image"], num_proc=num_proc,
                    desc=f"Checking {split} images",
                    new_fingerprint=pass_fingerprint(raw, _check_batch, batch_size=256))
    if len(raw) >= ESTIMATE_ABOVE:
        logger.info("Checked %d %s images in %.0f s", len(raw), split, time.time() - started)
    ok = np.asarray(flags["ok"][:], dtype=bool)
    if digests is not None:
        digests.extend(flags["digest"][:])
    bad = []
    for row in np.flatnonzero(~ok):
        item = raw[int(row)]["image"] or {}
        bad.append((int(row), item.get("path") or "embedded bytes", flags[int(row)]["error"]))
    return bad


def check_images(named: dict[str, Dataset], policy: str, num_proc: int | None = None,
                 digests: dict[str, list[str]] | None = None) -> tuple[dict[str, Dataset], dict[str, int]]:
    """Decode every image of every split once; stop on unreadable ones, or drop them when `policy` is "skip".

    Args:
        digests: when given, gets {split: the pixel digest of every kept row} (`duplicates.find_exact_duplicates`).

    Returns:
        The splits without unreadable rows, and how many were dropped from each.

    Raises:
        PipelineError: with policy "error", naming the split, row and file of the first unreadable image and how
            many there are in all.
    """
    found = {split: [] for split in named}
    bad = {split: find_bad_images(ds, split, num_proc, found[split]) for split, ds in named.items()}
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
    if digests is not None:
        digests.update({split: [d for d in found[split] if d] for split in named})
    return kept, {split: len(rows) for split, rows in bad.items() if rows}


# ----------------------------------------------------------------------------------------------- train/serve skew

# The modes `to_rgb` converts otherwise than PIL's convert("RGB") does (a palette image too, when it has a
# transparent colour), and what `serve_skew` calls them. Every other mode, CMYK included, both read the same way.
SKEW_KINDS = {**dict.fromkeys(("I;16", "I;16B", "I;16L", "I;16N", "I", "F"), "16-bit"),
              **dict.fromkeys(("RGBA", "LA", "PA"), "transparent")}


def serve_skew(item: dict | None) -> str:
    """How `transformers.pipeline("image-classification")` reads this raw image cell differently from training.

    Training decodes with `data.decode.to_rgb` (16-bit scaled to 8 bits, alpha composited on white); the pipeline's
    `load_image` calls PIL's `convert("RGB")` (16-bit clipped, alpha dropped). For the modes of `SKEW_KINDS` both
    conversions are run and their pixels compared, so an opaque RGBA file or a 16-bit one whose values fit in 8 bits
    is not counted. Other modes (RGB, gray, CMYK, palettes without transparency) are read the same way by both and
    are not decoded: only their header is read.

    Returns:
        "16-bit" or "transparent" when the pixels differ; "" when they are the same, or when the file is unreadable
        (the image check reports it).
    """
    from vit_pipeline.data.decode import to_rgb  # torch: imported only when a check runs

    try:
        source = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
        with Image.open(source) as image:
            kind = SKEW_KINDS.get(image.mode) or (
                "transparent" if image.mode == "P" and "transparency" in image.info else "")
            if not kind:
                return ""
            image.load()
            return "" if np.array_equal(np.asarray(to_rgb(image)), np.asarray(image.convert("RGB"))) else kind
    except Exception:  # unreadable: not this check's to report
        return ""


def _skew_batch(batch: dict) -> dict:
    return {"skew": [serve_skew(item) for item in batch["image"]]}


SERVE_FIX = ("predict with `vit-pipeline predict` (it decodes as training did), or convert each image with "
             "vit_pipeline.data.decode.to_rgb before pipeline() (the model card shows the snippet)")


def count_serve_skew(named: dict[str, Dataset], num_proc: int | None = None) -> dict[str, dict[str, int]]:
    """Count, per split, the images `pipeline()` would read differently from training (`serve_skew`), and warn with
    the fix.

    Returns:
        {split: {kind: count}} for the splits that have any (kinds: "16-bit", "transparent").
    """
    counts = {}
    for split, ds in named.items():
        raw = ds.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
        kinds = raw.map(_skew_batch, batched=True, batch_size=256, remove_columns=["image"],
                        num_proc=check_workers(num_proc, len(ds)),
                        new_fingerprint=pass_fingerprint(raw, _skew_batch, batch_size=256),
                        desc=f"Comparing {split} images with pipeline()'s decoding")["skew"][:]
        rows = [i for i, kind in enumerate(kinds) if kind]
        if not rows:
            continue
        counts[split] = dict(sorted(Counter(kinds[i] for i in rows).items(), key=lambda kv: (-kv[1], kv[0])))
        first = raw[rows[0]]["image"] or {}
        logger.warning("Train/serve skew: %d of %d %s images (%s) are read differently by transformers' "
                       "pipeline(\"image-classification\") than by training (first: %s). Training scales 16-bit "
                       "images to 8 bits and puts transparent ones on white; pipeline() clips the first (PIL's "
                       "convert(\"RGB\")) and drops the alpha of the second. To get the scores training measured, %s.",
                       len(rows), len(ds), split, ", ".join(f"{k}: {n}" for k, n in counts[split].items()),
                       first.get("path") or f"row {rows[0]}", SERVE_FIX)
    return counts


def fix_snippet() -> str:
    """The card's conversion to apply before `pipeline()`: `to_rgb`'s own source, so card and training cannot drift."""
    import inspect

    from vit_pipeline.data.decode import to_rgb

    return "import numpy as np\nfrom PIL import Image\n\n\n" + inspect.getsource(to_rgb).strip()
