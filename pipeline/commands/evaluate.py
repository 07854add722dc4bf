"""`vit-pipeline evaluate MODEL --output_dir R [data options]`: the evaluation report of a trained model.

MODEL is a training output folder or a Hub id; the data options are the train command's (`--dataset_name`,
`--train_dir` / `--validation_dir`, `--eval_split`, column names, `--max_eval_samples`, `--bad_images`, ...).
Writes R/eval_report.json, R/eval_report.md, R/predictions.csv and the figures.
"""

from __future__ import annotations

import logging
import sys

from vit_pipeline.utils import setup_logging

logger = logging.getLogger("vit_pipeline")

PROG = "vit-pipeline evaluate"


def data_arguments(argv: list[str]) -> list[str]:
    """A lone `--validation_dir D` is the data to evaluate: it is read as the labelled folder, nothing trains on it."""
    flags = {a.split("=", 1)[0] for a in argv}
    if "--validation_dir" in flags and not flags & {"--train_dir", "--dataset_name"}:
        at = next(i for i, a in enumerate(argv) if a.split("=", 1)[0] == "--validation_dir")
        value = argv[at].split("=", 1)[1] if "=" in argv[at] else (argv[at + 1] if at + 1 < len(argv) else "")
        return [*argv, "--train_dir", value]
    return argv


def main(argv: list[str]) -> dict:
    """`vit-pipeline evaluate`: load the model and the eval split, predict, write the report. Returns the report."""
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.config.commands import CommandParser, EvaluateArguments

    parser = CommandParser((EvaluateArguments, DataArguments), PROG, "MODEL --output_dir R")
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        sys.exit(0)
    positionals, (args, data_args) = parser.parse_command(data_arguments(argv))
    from vit_pipeline import PipelineError

    if len(positionals) != 1:
        raise PipelineError(f"evaluate takes one MODEL (an output folder or a Hub id), got {len(positionals)}: "
                            f"{' '.join(positionals) or 'none'}")
    name = positionals[0]
    setup_logging()

    # Model first: a wrong name fails before any data is read.
    from huggingface_hub import get_token

    from vit_pipeline.evaluation.inference import load_trained

    token = get_token()
    model, image_processor = load_trained(name, token=token, revision=args.model_revision)

    # Data: the eval split, as training picked it (same seed, same held-out share).
    from vit_pipeline.data.load import load_splits

    splits = load_splits(data_args, seed=args.seed, token=token)
    dataset_name = data_args.dataset_name or data_args.validation_dir or data_args.train_dir
    logger.info("Evaluating %s on %d images (%s of %s)", name, len(splits.eval), splits.eval_split_name,
                dataset_name)
    from vit_pipeline.evaluation.run_report import evaluate_dataset

    report = evaluate_dataset(model, image_processor, splits.eval, splits.labels, args.output_dir, model_name=name,
                              dataset_name=dataset_name, split=splits.eval_split_name, seed=args.seed,
                              batch_size=args.batch_size, progress=True,
                              revision=args.model_revision)
    if "map" in report:
        print(f"map {report['map']:.4f}, f1_macro {report['f1_macro']:.4f}, f1_micro {report['f1_micro']:.4f} on "
              f"{report['num_samples']} images (multi-label); report in {args.output_dir}")
        return report
    low, high = report["accuracy_ci95"]
    print(f"accuracy {report['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}), f1 {report['f1']:.4f}, "
          f"ece {report['ece']:.4f} on {report['num_samples']} images; report in {args.output_dir}")
    return report
