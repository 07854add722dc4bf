"""`vit-pipeline audit [RECIPE] --output_dir A [--model MODEL] [data options]`: label issues, duplicates, leakage,
outliers, image issues and class balance of the data a recipe trains on.

The data is read exactly as `train` reads it (the recipe's data keys or the same flags, the same held-out split and
seed); every image is embedded once with MODEL (a trained output folder or a Hub id; default the recipe's
checkpoint), batched, on the GPU when there is one. Writes A/audit_report.json / .md, A/issues.csv,
A/label_issues.png, A/duplicates.png, A/leakage.png and A/exclude.txt (for a recipe's `exclude_images`). Nothing is
deleted from the data.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

from vit_pipeline import PipelineError
from vit_pipeline.utils import setup_logging

logger = logging.getLogger("vit_pipeline")

PROG = "vit-pipeline audit"
EXTRA = "pip install 'vit-pipeline[audit]'"


def recipe_arguments(argv: list[str]) -> tuple[list[str], str | None]:
    """A leading RECIPE.yaml as flags (its data keys and seed; the other keys are training's), before the user's
    flags, which win; and the recipe's model_name_or_path (the default --model)."""
    if not argv or argv[0].startswith("-"):
        return argv, None
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.config.parser import RecipeParser, values_to_argv

    if not argv[0].endswith((".yaml", ".yml")):
        raise PipelineError(f"audit takes a RECIPE.yaml (or the data options alone), got '{argv[0]}'")
    recipe = RecipeParser(PROG).read_recipe(argv[0])
    keys = {f.name for f in dataclasses.fields(DataArguments)} | {"seed"}
    values = {k: v for k, v in recipe.items() if k in keys and v is not None and not isinstance(v, dict)}
    return [*values_to_argv(values), *argv[1:]], recipe.get("model_name_or_path")


def require_extra() -> None:
    """Refuse in one line when the audit extra (cleanlab, cleanvision) is missing."""
    try:
        import cleanlab  # noqa: F401
        import cleanvision  # noqa: F401
    except ImportError as err:
        raise PipelineError(f"audit needs the audit extra (cleanlab, cleanvision): {EXTRA}") from err


def load_audited_splits(data_args, seed: int, token: str | None):
    """The splits as train loads them, every image checked (its pixel digest taken), rows named by their source."""
    from vit_pipeline.data.load import load_splits

    # The check takes the pixel digests (exact duplicates); the audit builds no pixel cache.
    data_args = dataclasses.replace(data_args, verify_images=True, pixel_cache=False)
    splits = load_splits(data_args, seed=seed, token=token, with_source=True)
    if splits.multi_label:
        raise PipelineError("audit is single-label only for now (cleanlab's multi-label label-issue route is not "
                            "wired in): audit a single-label dataset")
    return splits


def image_ids(images) -> tuple[list[str], str]:
    """What exclude.txt names each image by: its file path when every image has its own, else `split:row`."""
    from vit_pipeline.data.exclude import SOURCE_COLUMN, image_paths

    paths = image_paths(images, "image")
    if all(paths) and len(set(paths)) == len(paths):
        return [str(p) for p in paths], "path"
    return list(images[SOURCE_COLUMN]), "row"


def model_logits(model, logits, labels: list[str]):
    """The model's logits in the data's label order when it was trained on these labels, else None."""
    from vit_pipeline.evaluation.inference import model_labels

    names = model_labels(model)
    if sorted(names) != sorted(labels):
        return None
    return logits[:, [names.index(name) for name in labels]]


def audit_data(splits, images, features, n_neighbors: int):
    """Every image of every split (train, eval, test: a copy of a train image in the test split is the leak that
    matters most) in one order, with its id, label, embedding and neighbours."""
    import numpy as np

    from vit_pipeline.data.duplicates import confirm_in
    from vit_pipeline.evaluation.audit.checks import AuditData
    from vit_pipeline.evaluation.audit.neighbours import nearest_neighbours

    named = splits.by_name()
    ids, id_kind = image_ids(images)
    return AuditData(splits=np.array([name for name, ds in named.items() for _ in range(len(ds))]),
                     rows=np.concatenate([np.arange(len(ds)) for ds in named.values()]),
                     ids=ids, id_kind=id_kind, labels=np.asarray(images["label"]), label_names=splits.labels,
                     features=features, neighbours=nearest_neighbours(features, n_neighbors),
                     digests={name: splits.pixel_digests[name] for name in named},
                     images=images.select_columns(["image"]), confirm=confirm_in(named))


def main(argv: list[str]) -> dict:
    """`vit-pipeline audit`: load the model and the data, embed every image once, run the checks, write the report."""
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.config.commands import AuditArguments, CommandParser

    parser = CommandParser((AuditArguments, DataArguments), PROG, "[RECIPE.yaml] --output_dir A [--model MODEL]")
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        sys.exit(0)
    flags, recipe_model = recipe_arguments(argv)
    positionals, (args, data_args) = parser.parse_command(flags)
    if positionals:
        raise PipelineError(f"unexpected argument(s) {' '.join(positionals)}: audit takes one RECIPE.yaml first")
    require_extra()
    setup_logging()

    # Model first: a wrong name fails before any data is read.
    from huggingface_hub import get_token

    from vit_pipeline.evaluation.inference import load_trained

    name = args.model or recipe_model
    if not name:
        raise PipelineError("audit needs a model to embed the images: --model (a trained output folder or a Hub id)"
                            ", or a recipe whose model_name_or_path is one")
    token = get_token()
    model, image_processor = load_trained(name, token=token, revision=args.model_revision)

    # Data, exactly as train reads it (the check takes every image's pixel digest).
    started = time.perf_counter()
    splits = load_audited_splits(data_args, args.seed, token)
    timing = {"load_and_check": time.perf_counter() - started}
    import datasets

    images = datasets.concatenate_datasets(list(splits.by_name().values()))

    # The embedding pass: every image once.
    from vit_pipeline.evaluation.audit.embed import centre_and_normalise, embed_images

    started = time.perf_counter()
    features, logits = embed_images(model, images, image_processor, args.batch_size, progress=True)
    timing["embedding"] = time.perf_counter() - started

    # Neighbours, then every check on them.
    from vit_pipeline.evaluation.audit.checks import run_checks

    started = time.perf_counter()
    data = audit_data(splits, images, centre_and_normalise(features), args.n_neighbors)
    timing["neighbours"] = time.perf_counter() - started
    findings, seconds = run_checks(data, {"label": {"method": args.label_method, "seed": args.seed},
                                          "near_duplicate": {"similarity": args.near_duplicate_similarity},
                                          "image": {"enabled": args.image_issues}})
    timing.update(seconds)

    # The report.
    from vit_pipeline.evaluation.audit.report import accuracy_with_and_without, build_report, leakage, write_audit
    from vit_pipeline.evaluation.audit.summary import class_balance_of, print_summary

    balance, starved = class_balance_of(data)
    accuracy = accuracy_with_and_without(data, model_logits(model, logits, splits.labels), leakage(data, findings))
    settings = {"model": name, "eval_split": splits.eval_split_name, "neighbour_search": data.neighbours.backend,
                **{k: v for k, v in vars(args).items() if k not in ("output_dir", "model")},
                "near_duplicate_similarity": findings["near_duplicate"].summary["similarity"]}
    report = build_report(data, findings, balance=balance, starved=starved, accuracy=accuracy, settings=settings,
                          timing={k: round(v, 3) for k, v in timing.items()})
    write_audit(data, findings, report, tuple(args.exclude_issues), Path(args.output_dir))
    print_summary(report, timing, Path(args.output_dir))
    return report
