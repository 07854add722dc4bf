"""`vit-pipeline evaluate MODEL --output_dir R [data options]`: the evaluation report of a trained model.

MODEL is a training output folder or a Hub id; the data options are the train command's (`--dataset_name`,
`--train_dir` / `--validation_dir`, `--eval_split`, column names, `--max_eval_samples`, `--bad_images`, ...).
With none, a training run is evaluated on exactly the rows it held out, read from its `recipe.yaml` (data, seed,
fractions, max samples): its eval split, or with `--eval_split test` its test split. Options given override the
recipe's; a split that then shares images with the run's training rows is refused unless `--allow_train_overlap`.
Writes R/eval_report.json, R/eval_report.md, R/predictions.csv and the figures.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

from vit_pipeline.utils import setup_logging

logger = logging.getLogger("vit_pipeline")

PROG = "vit-pipeline evaluate"
# The options that name the data: given one, the run's recipe no longer says which data to read.
DATA_SOURCES = {"dataset_name", "train_dir", "validation_dir"}


def data_arguments(argv: list[str]) -> list[str]:
    """A lone `--validation_dir D` is the data to evaluate: it is read as the labelled folder, nothing trains on it."""
    flags = {a.split("=", 1)[0] for a in argv}
    if "--validation_dir" in flags and not flags & {"--train_dir", "--dataset_name"}:
        at = next(i for i, a in enumerate(argv) if a.split("=", 1)[0] == "--validation_dir")
        value = argv[at].split("=", 1)[1] if "=" in argv[at] else (argv[at + 1] if at + 1 < len(argv) else "")
        return [*argv, "--train_dir", value]
    return argv


def run_recipe(argv: list[str], parser) -> dict | None:
    """The recipe of MODEL when it is a training run (`MODEL/recipe.yaml`), read before the options are parsed: its
    data fields, seed and eval batch size become the defaults. None for a Hub id or a folder without one."""
    import yaml

    from vit_pipeline.config.arguments import RECIPE_FILE

    _, remaining = parser.parse_known_args(argv)
    positionals = [a for a in remaining if not a.startswith("-")]
    path = Path(positionals[0]) / RECIPE_FILE if positionals else None
    if path is None or not path.is_file():
        return None
    return yaml.safe_load(path.read_text()) or {}


def run_defaults(recipe: dict, parser) -> None:
    """Make the run's data fields, seed and eval batch size the defaults of `parser` (options given still win)."""
    from vit_pipeline.config.arguments import DataArguments

    fields = {f.name for f in dataclasses.fields(DataArguments)}
    defaults = {k: v for k, v in recipe.items() if k in fields}
    # evaluate never builds the pixel cache: the images are decoded as pipeline() reads them.
    defaults["pixel_cache"] = False
    if "test_fraction" not in recipe:
        # A run from before test splits held none out: the rows a default test_fraction would take it trained on.
        defaults["test_split"] = "none"
    if "seed" in recipe:
        defaults["seed"] = recipe["seed"]
    if "per_device_eval_batch_size" in recipe:
        defaults["batch_size"] = recipe["per_device_eval_batch_size"]
    parser.set_defaults(**defaults)


def data_options_given(argv: list[str]) -> set[str]:
    """The data options on the command line (`DataArguments` fields, `--no_field` forms included)."""
    from vit_pipeline.config.arguments import DataArguments

    given = {a.split("=", 1)[0][2:] for a in argv if a.startswith("--")}
    given |= {name[3:] for name in given if name.startswith("no_")}
    return given & {f.name for f in dataclasses.fields(DataArguments)}


def run_split(data_args, recipe: dict | None):
    """With MODEL a training run and `--eval_split test`: the run's own data arguments and True (score its test split,
    wherever it came from: the dataset's test split or the part of train it held out); else as given and False."""
    if recipe is None or data_args.eval_split != "test" or recipe.get("eval_split") == "test":
        return data_args, False
    return dataclasses.replace(data_args, eval_split=recipe.get("eval_split")), True


def rows_to_score(splits, test: bool):
    """The rows to evaluate and the split's name: the eval split, or the test split.

    Raises:
        PipelineError: the test split was asked for and the run had none.
    """
    from vit_pipeline import PipelineError

    if not test:
        return splits.eval, splits.eval_split_name
    if splits.test is None:
        raise PipelineError("the run has no test split (test_split: none, test_fraction: 0, or a run from before "
                            "test splits): evaluate its eval split (no --eval_split), or name a split of the data")
    return splits.test, splits.test_split_name


def train_overlap(rows, recipe: dict | None, own_rows: bool, allow: bool, token: str | None) -> int | None:
    """How many of `rows` are among the run's training rows (loaded from its recipe), when they may be: None when
    MODEL is not a training run or `rows` are the very rows the run held out.

    Raises:
        PipelineError: some are, without `allow` (one line: how many, and what to do).
    """
    if recipe is None or own_rows:
        return None
    from vit_pipeline import PipelineError
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.data.load import load_splits
    from vit_pipeline.data.overlap import count_shared

    fields = {f.name for f in dataclasses.fields(DataArguments)}
    run_data = DataArguments(**{**{k: v for k, v in recipe.items() if k in fields}, "verify_images": False,
                                "pixel_cache": False})
    shared = count_shared(rows, load_splits(run_data, seed=recipe.get("seed", 42), token=token).train)
    if shared and not allow:
        raise PipelineError(f"{shared} of these {len(rows)} images are among the run's training rows, so the figures "
                            "would not be held-out ones: evaluate the rows the run held out (no data options; "
                            "--eval_split test for its test split), or pass --allow_train_overlap to mark the report")
    if shared:
        logger.warning("%d of the %d images are among the run's training rows (--allow_train_overlap): the report "
                       "says so", shared, len(rows))
    return shared


def evaluation_rows(argv: list[str], args, data_args, recipe: dict | None, run_mode: bool, token: str | None):
    """Load the data and pick the rows to score.

    Returns:
        (the data arguments used, the loaded splits, the rows, the split's name, how many rows the run trained on
        or None when not checked: see `train_overlap`).
    """
    from vit_pipeline.data.load import load_splits

    data_args, test = run_split(data_args, recipe if run_mode else None)
    if not run_mode and not data_options_given(argv) & {"test_split", "test_fraction"}:
        # Data named here: no test part is held out of its train split (nothing trains on it, nothing scores it).
        data_args = dataclasses.replace(data_args, test_split="none")
    splits = load_splits(data_args, seed=args.seed, token=token)
    rows, split = rows_to_score(splits, test)
    # The run's own held-out rows need no check; any other data option may bring in training rows.
    own_rows = run_mode and not data_options_given(argv) - {"eval_split"} and (
        data_args.eval_split == recipe.get("eval_split"))
    return data_args, splits, rows, split, train_overlap(rows, recipe, own_rows, args.allow_train_overlap, token)


def parse_arguments(argv: list[str]):
    """The command line read as `main` reads it: a training run with no data source given lends its recipe's data,
    seed and batch size as the defaults.

    Returns:
        (argv with a lone `--validation_dir` made the data, the positionals, `EvaluateArguments`, `DataArguments`,
        the run's recipe or None, whether the run's own held-out rows are evaluated).
    """
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.config.commands import CommandParser, EvaluateArguments

    parser = CommandParser((EvaluateArguments, DataArguments), PROG, "MODEL --output_dir R")
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        sys.exit(0)
    argv = data_arguments(argv)
    recipe = run_recipe(argv, parser)
    run_mode = recipe is not None and not data_options_given(argv) & DATA_SOURCES
    if run_mode:
        run_defaults(recipe, parser)
    positionals, (args, data_args) = parser.parse_command(argv)
    return argv, positionals, args, data_args, recipe, run_mode


def main(argv: list[str]) -> dict:
    """`vit-pipeline evaluate`: load the model and the eval split, predict, write the report. Returns the report."""
    argv, positionals, args, data_args, recipe, run_mode = parse_arguments(argv)
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

    # Data: the eval split (or the run's test split), as training picked it (same seed, same held-out shares), and
    # how many of its images the run trained on.
    data_args, splits, rows, split, overlap = evaluation_rows(argv, args, data_args, recipe, run_mode, token)
    dataset_name = data_args.dataset_name or data_args.validation_dir or data_args.train_dir
    logger.info("Evaluating %s on %d images (%s of %s)", name, len(rows), split, dataset_name)
    from vit_pipeline.evaluation.run_report import evaluate_dataset

    report = evaluate_dataset(model, image_processor, rows, splits.labels, args.output_dir, model_name=name,
                              dataset_name=dataset_name, split=split, seed=args.seed, batch_size=args.batch_size,
                              progress=True, revision=args.model_revision, train_overlap=overlap)
    if "map" in report:
        print(f"map {report['map']:.4f}, f1_macro {report['f1_macro']:.4f}, f1_micro {report['f1_micro']:.4f} on "
              f"{report['num_samples']} images (multi-label); report in {args.output_dir}")
        return report
    low, high = report["accuracy_ci95"]
    print(f"accuracy {report['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}), f1 {report['f1']:.4f}, "
          f"ece {report['ece']:.4f} on {report['num_samples']} images; report in {args.output_dir}")
    return report
