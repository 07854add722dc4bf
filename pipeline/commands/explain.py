"""`vit-pipeline explain MODEL IMAGE... --output_dir X`: attention rollout maps, one PNG per image.

Attention rollout (Abnar & Zuidema 2020) over the model's own view of each image (resized and cropped as its image
processor does), with the predicted label and score in the title. ViT-family models only: a model without
self-attention maps (a CNN) is refused in one line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from vit_pipeline import PipelineError
from vit_pipeline.utils import setup_logging

logger = logging.getLogger("vit_pipeline")

PROG = "vit-pipeline explain"


def main(argv: list[str]) -> list[Path]:
    """`vit-pipeline explain`: load the model, roll attention out over each image, write one PNG each."""
    from vit_pipeline.config.commands import CommandParser, ExplainArguments

    parser = CommandParser((ExplainArguments,), PROG, "MODEL IMAGE... --output_dir X")
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        sys.exit(0)
    positionals, (args,) = parser.parse_command(argv)
    if len(positionals) < 2:
        raise PipelineError("explain takes a MODEL and at least one IMAGE (files, folders or globs)")
    name = positionals[0]
    setup_logging()
    from vit_pipeline.commands.predict import expand_inputs, readable

    paths, bad = readable(expand_inputs(positionals[1:]), "skip")
    if bad:
        logger.warning("Skipped %d unreadable file(s) (first: %s, %s)", len(bad), *bad[0])
    if not paths:
        raise PipelineError(f"none of the {len(bad)} input file(s) is a readable image (first: {bad[0][0]})")

    from huggingface_hub import get_token

    from vit_pipeline.evaluation.inference import load_trained
    from vit_pipeline.evaluation.rollout import has_attentions

    model, image_processor = load_trained(name, token=get_token(), revision=args.model_revision)
    if not has_attentions(model):
        raise PipelineError(f"{type(model).__name__} has no self-attention maps (a CNN or a model without "
                            "ViT-style attention): explain works for ViT-family models")
    from vit_pipeline.evaluation.plots import plot_rollouts
    from vit_pipeline.evaluation.rollout import rollout_images

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for path in paths:
        (view, heat, label, score), = rollout_images(model, image_processor, [path], args.head_fusion,
                                                     args.discard_ratio)
        stem = Path(path).stem
        target = out / f"{stem}.png"
        counter = 1
        while target.name in used:
            target = out / f"{stem}-{counter}.png"
            counter += 1
        used.add(target.name)
        written.append(plot_rollouts([(view, heat, f"{Path(path).name}: {label} ({score:.2f})")], target))
    print(f"{len(written)} rollout map(s) written to {out}")
    return written
