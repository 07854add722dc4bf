"""`vit-pipeline predict MODEL INPUT... --output F`: the model's predictions for image files, folders or globs.

One row per image: `path`, `label`, `score`, and the top-k as `labels` / `scores` lists (JSON text in a CSV). F ends in
.csv, .jsonl or .parquet. Batched, on the GPU in bf16 when there is one; unreadable files are skipped and counted
(`--bad_images error` stops on the first instead).
"""

from __future__ import annotations

import glob
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from vit_pipeline import PipelineError
from vit_pipeline.utils import first_line, setup_logging

logger = logging.getLogger("vit_pipeline")

PROG = "vit-pipeline predict"


def expand_inputs(inputs: list[str]) -> list[str]:
    """Image files, folders (searched recursively for image files) and globs, as a sorted list without repeats.

    A file named explicitly is kept whatever its ending (it is checked when read); folders and globs contribute only
    files with an image ending.

    Raises:
        PipelineError: an input that matches nothing, or no image at all.
    """
    from vit_pipeline.data.sources import IMAGE_EXTENSIONS

    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.append(str(path))
        elif path.is_dir():
            found += sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            found += [m for m in matches if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_EXTENSIONS]
        else:
            raise PipelineError(f"input {item} is not a file, a folder or a glob that matches anything")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise PipelineError(f"no images in {' '.join(inputs)} (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    return unique


def readable(paths: list[str], policy: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Split `paths` into the readable images and the unreadable ones (path, error); stop on one with "error".

    The training image check's (`data.check.check_image`: JPEGs at 1/8 scale), not a second full decode, on one thread
    per core (PIL's decoders release the GIL): done one file at a time, it was a quarter of the command's time on 256
    photos.
    """
    from vit_pipeline.data.batches import image_threads
    from vit_pipeline.evaluation.inference import decode_threads

    good, bad = [], []
    for path, err in zip(paths, image_threads(decode_threads(0)).map(_check, paths), strict=True):
        if err is None:
            good.append(path)
        elif policy == "error":
            raise PipelineError(f"unreadable image {path}: {type(err).__name__}: {first_line(err)}; remove it, "
                                "or use --bad_images skip") from err
        else:
            bad.append((path, type(err).__name__))
    return good, bad


def _check(path: str) -> Exception | None:
    from vit_pipeline.data.check import check_image

    try:
        check_image(path)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        return err
    return None


def prediction_table(paths: list[str], logits: np.ndarray, names: list[str], top_k: int, threshold: float
                     ) -> list[dict]:
    """Rows of path, label, score, labels, scores (softmax, best first; below `threshold` left out)."""
    from vit_pipeline.evaluation.inference import softmax

    probs = softmax(logits)
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = []
    for path, p, top in zip(paths, probs, order, strict=True):
        kept = [int(j) for j in top if p[j] >= threshold]
        rows.append({"path": path, "label": names[kept[0]] if kept else None,
                     "score": float(p[kept[0]]) if kept else None,
                     "labels": [names[j] for j in kept], "scores": [float(p[j]) for j in kept]})
    return rows


def write_table(rows: list[dict], output: str | Path) -> Path:
    """Write rows as CSV (lists as JSON text), JSON Lines, or parquet, by the file's ending."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".jsonl":
        output.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([
            ("path", pa.string()), ("label", pa.string()), ("score", pa.float64()),
            ("labels", pa.list_(pa.string())), ("scores", pa.list_(pa.float64()))])), output)
    else:
        import csv

        with output.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["path", "label", "score", "labels", "scores"])
            for row in rows:
                writer.writerow([row["path"], row["label"] or "", "" if row["score"] is None else f"{row['score']:.6f}",
                                 json.dumps(row["labels"]), json.dumps([round(s, 6) for s in row["scores"]])])
    return output


def main(argv: list[str]) -> list[dict]:
    """`vit-pipeline predict`: expand the inputs, check them, predict in batches, write the table. Returns the rows."""
    from vit_pipeline.config.commands import CommandParser, PredictArguments

    parser = CommandParser((PredictArguments,), PROG, "MODEL INPUT... --output F")
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        sys.exit(0)
    positionals, (args,) = parser.parse_command(argv)
    if len(positionals) < 2:
        raise PipelineError("predict takes a MODEL and at least one INPUT (image files, folders or globs)")
    name, inputs = positionals[0], positionals[1:]
    setup_logging()

    paths, bad = readable(expand_inputs(inputs), args.bad_images)
    if bad:
        logger.warning("Skipped %d unreadable file(s) (first: %s, %s)", len(bad), *bad[0])
    if not paths:
        raise PipelineError(f"none of the {len(bad)} input file(s) is a readable image (first: {bad[0][0]})")

    from huggingface_hub import get_token

    from vit_pipeline.evaluation.inference import load_trained, model_labels, predict_logits

    model, image_processor = load_trained(name, token=get_token(), revision=args.model_revision)
    import datasets

    from vit_pipeline.evaluation.inference import decode_threads, loader_workers

    dataset = datasets.Dataset.from_dict({"image": paths}, features=datasets.Features({"image": datasets.Image()}))
    workers = loader_workers(len(paths), args.batch_size)  # decoding in workers on a GPU host, else on threads
    start = time.perf_counter()
    logits, _ = predict_logits(model, dataset, image_processor, batch_size=args.batch_size, progress=True,
                               num_workers=workers)
    seconds = time.perf_counter() - start
    from vit_pipeline.model.inspect import is_multi_label

    if is_multi_label(model):
        from vit_pipeline.evaluation.multilabel import multilabel_prediction_table, saved_thresholds

        # Every label at or above its threshold: --threshold, else the ones tuned at training, else 0.5.
        names = model_labels(model)
        thresholds = args.threshold
        if thresholds is None:
            thresholds = saved_thresholds(name, names, token=get_token(), revision=args.model_revision)
            thresholds = 0.5 if thresholds is None else thresholds
        rows = multilabel_prediction_table(paths, logits, names, thresholds)
    else:
        rows = prediction_table(paths, logits, model_labels(model), args.top_k, args.threshold or 0.0)
    write_table(rows, args.output)
    threads = decode_threads(workers)
    decoding = (f"{workers} loader worker{'' if workers == 1 else 's'}" if workers else
                f"decoded on {threads} thread{'' if threads == 1 else 's'}")
    print(f"{len(rows)} image(s) predicted into {args.output} ({len(rows) / seconds:,.1f} images/s, {decoding})"
          + (f"; {len(bad)} unreadable skipped" if bad else ""))
    return rows
