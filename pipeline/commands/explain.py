"""`vit-pipeline explain MODEL IMAGE... --output_dir X [--method M] [--target LABEL] [--faithfulness true]`: where the
model looks, one PNG per image (the model's view beside the map, titled with the label and its score).

Every family has a method: attention rollout (Abnar & Zuidema 2020) for ViT-family models, pytorch-grad-cam's
Grad-CAM and the other CAM methods for every family (the explain extra); a method that does not apply (rollout on a
CNN) is refused in one line naming those that do. `--faithfulness true` scores each map by deletion and insertion AUC
beside a random map's (`evaluation.faithfulness`). `explain MODEL --dataset_name D --max_samples N` explains N eval
images of a dataset (the data options of `evaluate`). Writes X/explain_report.json.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from vit_pipeline import PipelineError
from vit_pipeline.utils import setup_logging

logger = logging.getLogger("vit_pipeline")

PROG = "vit-pipeline explain"
DATA_FLAGS = ("--dataset_name", "--train_dir", "--validation_dir")


def parse_arguments(argv: list[str]):
    """(positionals, explain arguments, data arguments or None): the data options only when a dataset is named."""
    from vit_pipeline.commands.evaluate import data_arguments
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.config.commands import CommandParser, ExplainArguments

    with_data = any(a.split("=", 1)[0] in DATA_FLAGS for a in argv)
    usage = "MODEL [IMAGE...] --output_dir X [--dataset_name D --max_samples N]"
    if any(a in ("-h", "--help") for a in argv):  # both option groups
        CommandParser((ExplainArguments, DataArguments), PROG, usage).print_help()
        sys.exit(0)
    parser = CommandParser((ExplainArguments, DataArguments) if with_data else (ExplainArguments,), PROG, usage)
    positionals, parsed = parser.parse_command(data_arguments(argv) if with_data else argv)
    if not positionals or (len(positionals) < 2 and not with_data):
        raise PipelineError("explain takes a MODEL and at least one IMAGE (files, folders or globs), or a MODEL and "
                            "--dataset_name D")
    return positionals, parsed[0], parsed[1] if with_data else None


def _images(positionals: list[str], data_args, args, token):
    """(images, a file name for each): the image files given, or the first max_samples eval images of the data."""
    if data_args is None:
        from vit_pipeline.commands.predict import expand_inputs, readable

        paths, bad = readable(expand_inputs(positionals[1:]), "skip")
        if bad:
            logger.warning("Skipped %d unreadable file(s) (first: %s, %s)", len(bad), *bad[0])
        if not paths:
            raise PipelineError(f"none of the {len(bad)} input file(s) is a readable image (first: {bad[0][0]})")
        return paths, [Path(p).stem for p in paths]
    from vit_pipeline.data.load import load_splits

    splits = load_splits(data_args, seed=args.seed, token=token)
    count = min(args.max_samples, len(splits.eval))
    return [splits.eval[i]["image"] for i in range(count)], [f"{splits.eval_split_name}-{i:04d}" for i in range(count)]


def main(argv: list[str]) -> list[Path]:
    """`vit-pipeline explain`: load the model, explain each image (and score the maps), write one PNG each."""
    positionals, args, data_args = parse_arguments(argv)
    setup_logging()
    from huggingface_hub import get_token

    from vit_pipeline.evaluation.cam import check_method, default_method
    from vit_pipeline.evaluation.inference import load_trained

    # Model first: a method that does not apply fails before any image is read.
    token = get_token()
    model, image_processor = load_trained(positionals[0], token=token, revision=args.model_revision)
    method = args.method or default_method(model)
    check_method(model, method)
    from vit_pipeline.evaluation import explain as explanations

    images, stems = _images(positionals, data_args, args, token)
    target = explanations.target_index(model, args.target)
    items = explanations.explain_images(model, image_processor, images, method, target,
                                        head_fusion=args.head_fusion, discard_ratio=args.discard_ratio)
    scores = explanations.score_explanations(model, items, seed=args.seed) if args.faithfulness else None

    # One PNG per image (names made unique), and the report.
    from vit_pipeline.evaluation.plots import plot_rollouts

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for stem, item in zip(stems, items, strict=True):
        name, counter = f"{stem}.png", 1
        while name in used:
            name, counter = f"{stem}-{counter}.png", counter + 1
        used.add(name)
        written.append(plot_rollouts([(item.view, item.overlay, f"{name[:-4]}: {item.label} ({item.score:.2f})")],
                                     out / name, map_title=explanations.method_name(method)))
    report = explanations.write_report(out / explanations.REPORT_JSON, model=positionals[0], method=method,
                                       names=[p.name for p in written], items=items, scores=scores)
    print(f"{len(written)} {method} map(s) written to {out}")
    if scores:
        from vit_pipeline.evaluation.faithfulness import summary_line

        print(summary_line(method, report["faithfulness"]))
    return written
