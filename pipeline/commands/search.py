"""`vit-pipeline search RECIPE --n_trials N --output_dir S [--space SPACE.yaml] [--field value ...]`: hyperparameter
search with optuna around the train command's own code, in-process.

Each trial is a normal `vit-pipeline train` run in `S/trial-<n>` with the recipe, the shared flags and the trial's
values. A `TrainerCallback` reports the per-epoch eval metric (`metric_for_best_model`) to the trial and stops a bad
one early (optuna's median pruner). The study lives in `S/study.db` (sqlite): the same command again continues it
(N more trials; a trial cut off by an interruption is marked failed and its values tried again). Writes
`S/trials.csv`, `S/best_recipe.yaml` (runs with `vit-pipeline train` as is) and `S/optimization_history.png`.

SPACE.yaml maps recipe keys to ranges: `learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}`, `num_train_epochs:
{low: 2, high: 6}` (integers), `weight_decay: {choices: [0.0, 0.05]}`. Without it, a space for the model family.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import yaml

from vit_pipeline import PipelineError
from vit_pipeline.commands.compare import split_argv
from vit_pipeline.utils import one_line, plain, setup_logging

logger = logging.getLogger("vit_pipeline")

USAGE = """usage: vit-pipeline search RECIPE.yaml --n_trials N --output_dir S [--space SPACE.yaml] [--field value ...]

Runs N optuna trials of the recipe (each a train run in S/trial-<n>), pruning bad ones on the per-epoch eval metric,
and writes S/trials.csv, S/best_recipe.yaml and S/optimization_history.png. The study is kept in S/study.db: the same
command again adds N trials to it. SPACE.yaml: `key: {low: ..., high: ..., log: true}` or `key: {choices: [...]}`."""

STUDY_NAME = "vit-pipeline"
# Sensible first searches: fine-tuning a pre-trained transformer wants small learning rates, a CNN larger ones.
TRANSFORMER_SPACE = {
    "learning_rate": {"low": 1.0e-5, "high": 3.0e-4, "log": True},
    "weight_decay": {"choices": [0.0, 0.05]},
    "label_smoothing_factor": {"choices": [0.0, 0.1]},
}
CNN_SPACE = {
    "learning_rate": {"low": 1.0e-4, "high": 3.0e-3, "log": True},
    "weight_decay": {"choices": [0.0, 1.0e-4, 0.05]},
    "label_smoothing_factor": {"choices": [0.0, 0.1]},
}


def default_space(model_type: str) -> dict:
    """The search space used without --space: CNN or transformer ranges, by the checkpoint's model type."""
    from vit_pipeline.model.inspect import CONVOLUTIONAL

    return CNN_SPACE if model_type in CONVOLUTIONAL else TRANSFORMER_SPACE


def read_space(path: str | None, known: set[str], model_type: str) -> dict:
    """The search space (a mapping of recipe key -> range or choices), checked key by key.

    Raises:
        PipelineError: unreadable file, unknown key, or a range that is neither low/high nor choices.
    """
    if path is None:
        return default_space(model_type)
    try:
        space = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"cannot read search space {path}: {one_line(err)}") from err
    if not isinstance(space, dict) or not space:
        raise PipelineError(f"search space {path} must map recipe keys to ranges, e.g. learning_rate: "
                            "{low: 1.0e-5, high: 1.0e-3, log: true}")
    for key, spec in space.items():
        if key not in known:
            raise PipelineError(f"search space {path}: unknown recipe key '{key}'")
        if key in ("output_dir", "hub_token"):
            raise PipelineError(f"search space {path}: '{key}' cannot be searched")
        if not isinstance(spec, dict):
            raise PipelineError(f"search space {path}: {key} must be {{low: ..., high: ...}} or {{choices: [...]}}")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"] or set(spec) - {"choices"}:
                raise PipelineError(f"search space {path}: {key}: choices must be a non-empty list, alone")
        else:
            low, high = spec.get("low"), spec.get("high")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
                raise PipelineError(f"search space {path}: {key} needs numbers low < high (got {low}, {high})")
            extra = sorted(set(spec) - {"low", "high", "log", "step"})
            if extra:
                raise PipelineError(f"search space {path}: {key}: unknown entries {extra} (use low, high, log, step "
                                    "or choices)")
            if spec.get("log") and low <= 0:
                raise PipelineError(f"search space {path}: {key}: a log range needs low > 0")
    return space


def suggest(trial, space: dict) -> dict:
    """The trial's value for every key of the space."""
    values = {}
    for key, spec in space.items():
        if "choices" in spec:
            values[key] = trial.suggest_categorical(key, spec["choices"])
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log"):
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], step=int(spec.get("step", 1)))
        else:
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                                              step=spec.get("step"))
    return values


def as_flags(values: dict) -> list[str]:
    flags = []
    for key, value in values.items():
        if isinstance(value, list):
            flags += [f"--{key}", *map(str, value)]
        else:
            flags.append(f"--{key}={str(value).lower() if isinstance(value, bool) else value}")
    return flags


def pruning_callback(trial, metric: str):
    """A `TrainerCallback` that reports each evaluation's `metric` to `trial` (at its epoch, or its step when
    evaluating by steps) and raises `optuna.TrialPruned` when the pruner says the trial is worse than the others
    there."""
    import optuna
    from transformers import TrainerCallback

    class ReportToTrial(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(f"eval_{metric}")
            # Per-epoch evaluation reports the epoch, so trials with other batch sizes compare at the same point;
            # step-wise evaluation reports the optimizer step.
            per_epoch = args is not None and str(plain(args.eval_strategy)) == "epoch" and state.epoch is not None
            step = int(round(state.epoch)) if per_epoch else state.global_step
            if value is None or step in self.reported:
                return  # the final re-evaluation of the best checkpoint is not a new step
            self.reported.add(step)
            trial.report(float(value), step=step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"eval_{metric} {value:.4f} at {'epoch' if per_epoch else 'step'} {step}")

    callback = ReportToTrial()
    callback.reported = set()
    return callback


def _close_interrupted(study) -> None:
    # Trials left running by a killed search can never finish: mark them failed and try their values again.
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        logger.warning("trial %d was interrupted: marked failed, its values queued again", trial.number)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)


def best_mark(study, metric: str, maximize: bool) -> tuple[int | None, str]:
    """(best trial number, whether it is clearly better than the next best, in words), from the completed trials'
    eval reports (`evaluation.significance.best_trial_mark`); (None, "") when none completed."""
    from vit_pipeline.evaluation.significance import best_trial_mark

    done = [(t.number, t.value, t.user_attrs.get("output_dir", "")) for t in study.trials if t.state.name == "COMPLETE"]
    return best_trial_mark(done, metric, maximize) or (None, "")


def write_trials(study, space: dict, path: Path, metric: str = "accuracy", maximize: bool = True) -> Path:
    """One row per trial: number, state, value and its 95% bootstrap interval (accuracy or f1), pruned, the searched
    values, last epoch reached, folder; `best` marks the best trial, saying whether it is clearly better than the
    next (`best_mark`)."""
    from vit_pipeline.evaluation.significance import metric_interval

    mark = best_mark(study, metric, maximize)
    columns = ["number", "state", "value", "ci95_low", "ci95_high", "best", "pruned", *space, "last_report",
               "duration_s", "output_dir"]
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for t in study.trials:
            interval = (metric_interval(t.user_attrs.get("output_dir", ""), metric) if t.state.name == "COMPLETE"
                        else None) or ["", ""]
            writer.writerow({
                "number": t.number, "state": t.state.name, "value": "" if t.value is None else t.value,
                "ci95_low": interval[0], "ci95_high": interval[1], "best": mark[1] if t.number == mark[0] else "",
                "pruned": t.state.name == "PRUNED", **{k: t.params.get(k, "") for k in space},
                "last_report": max(t.intermediate_values) if t.intermediate_values else "",
                "duration_s": round(t.duration.total_seconds(), 1) if t.duration else "",
                "output_dir": t.user_attrs.get("output_dir", ""),
            })
    return path


def write_history(study, metric: str, path: Path, maximize: bool) -> Path:
    """Each trial's metric (pruned ones at their last report) and the best so far."""
    from vit_pipeline.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [(t.number, t.value) for t in study.trials if t.state.name == "COMPLETE"]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in study.trials
              if t.state.name == "PRUNED" and t.intermediate_values]
    if done:
        ax.scatter(*zip(*done, strict=True), label="complete", zorder=3)
        best, line = None, []
        for number, value in sorted(done):
            best = value if best is None or (value > best if maximize else value < best) else best
            line.append((number, best))
        ax.step(*zip(*line, strict=True), where="post", label="best so far", color="tab:orange")
    if pruned:
        ax.scatter(*zip(*pruned, strict=True), marker="x", color="tab:gray", label="pruned (last report)", zorder=3)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"eval {metric}")
    ax.set_title(f"optimization history ({len(study.trials)} trials)")
    ax.legend(loc="best")
    return save_figure(fig, path)


def write_best_recipe(study, output: Path, metric: str, push_to_hub: bool = False, note: str = "") -> Path | None:
    """The best trial's resolved recipe, with output_dir `S/best`: `vit-pipeline train S/best_recipe.yaml` reruns it.
    `note` (whether it is clearly better than the next, `best_trial_mark`) goes into its header."""
    from vit_pipeline.config.arguments import RECIPE_FILE

    try:
        best = study.best_trial
    except ValueError:
        return None
    recipe_file = Path(best.user_attrs.get("output_dir", "")) / RECIPE_FILE
    if not recipe_file.is_file():
        return None
    recipe = yaml.safe_load(recipe_file.read_text())
    recipe["output_dir"] = str(output / "best")
    recipe["push_to_hub"] = push_to_hub
    path = output / "best_recipe.yaml"
    values = ", ".join(f"{k}={v}" for k, v in best.params.items())
    path.write_text(f"# vit-pipeline train {path}\n"
                    f"# Best of {len(study.trials)} trials of `vit-pipeline search`: trial {best.number}, "
                    f"eval {metric} {best.value:.4f} ({values}).\n"
                    + (f"# Trial {best.number}: {note}.\n" if note else "") + yaml.safe_dump(recipe, sort_keys=False))
    return path


def main(argv: list[str]) -> dict:
    """`vit-pipeline search`: run the trials, then write trials.csv, best_recipe.yaml, optimization_history.png."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        if not argv:
            raise PipelineError("search needs a RECIPE.yaml, --n_trials and --output_dir")
        return {}
    n_trials, output, space_file, shared = _parse_search_options(argv)
    try:
        import optuna
    except ImportError as err:
        raise PipelineError("search needs the search extra: pip install 'vit-pipeline[search]'") from err
    # The recipe and flags, checked once; the space's keys and both ends of each range are checked too.
    training_args, metric, maximize, space = _check_recipe_and_space(shared, space_file, output)

    setup_logging()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    output.mkdir(parents=True, exist_ok=True)
    study = _open_study(optuna, output, space, shared, seed=training_args.seed, maximize=maximize)
    logger.info("search: %d trial(s) of %s on eval %s (%s), study %s (%d trial(s) so far)", n_trials,
                ", ".join(space), metric, "maximize" if maximize else "minimize", output / "study.db",
                len(study.trials))
    try:
        study.optimize(_objective(space, shared, output, metric), n_trials=n_trials, gc_after_trial=True)
    finally:
        # Written after every session, interrupted or not: what has finished so far.
        write_trials(study, space, output / "trials.csv", metric, maximize)
        if any(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials):
            write_history(study, metric, output / "optimization_history.png", maximize)
    _, note = best_mark(study, metric, maximize)  # is the best trial clearly better than the next?
    best_recipe = write_best_recipe(study, output, metric, push_to_hub=training_args.push_to_hub, note=note)
    if best_recipe is None:
        raise PipelineError(f"no trial of {output / 'study.db'} completed (all pruned or failed): see "
                            f"{output / 'trials.csv'}")
    logger.info("search: best trial %d, eval %s %.4f (%s), %s; rerun it with: vit-pipeline train %s",
                study.best_trial.number, metric, study.best_value,
                ", ".join(f"{k}={v}" for k, v in study.best_params.items()), note, best_recipe)
    return {"best_value": study.best_value, "best_params": study.best_params, "n_trials": len(study.trials)}


def _parse_search_options(argv: list[str]) -> tuple[int, Path, str | None, list[str]]:
    """search's own options (--n_trials, --output_dir, --space), checked; the rest is the recipe and its flags."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PipelineError("search runs its trials one after another in one process: launch it without "
                            "torchrun / accelerate launch (WORLD_SIZE > 1), or search on one GPU per study")
    own, shared = split_argv(argv, {"n_trials": "one", "output_dir": "one", "space": "one"})
    try:
        n_trials = int(own.get("n_trials", ""))
    except ValueError:
        raise PipelineError(f"search needs --n_trials N, a positive number (got {own.get('n_trials')!r})") from None
    if n_trials < 1:
        raise PipelineError(f"--n_trials must be at least 1 (got {n_trials})")
    if not own.get("output_dir"):
        raise PipelineError("search needs --output_dir S (the study, trials and best recipe are written there)")
    return n_trials, Path(own["output_dir"]).resolve(), own.get("space"), shared


def _check_recipe_and_space(shared: list[str], space_file: str | None, output: Path) -> tuple[object, str, bool, dict]:
    """Parse the recipe once, read the space, and parse the recipe at both ends of every range (bad values stop the
    search before any trial). Returns the training arguments, the metric, whether it is maximized, and the space."""
    from vit_pipeline.config import RecipeParser
    from vit_pipeline.model.load import load_config

    parser = RecipeParser(prog="vit-pipeline search")
    model_args, _, training_args, _ = parser.parse([*shared, "--output_dir", str(output / "trial-check")])
    metric = (training_args.metric_for_best_model or "loss").removeprefix("eval_")
    maximize = bool(training_args.greater_is_better) if training_args.greater_is_better is not None else (
        metric != "loss")
    space = read_space(space_file, set(parser.known_fields()), load_config(model_args).model_type)
    for end in ("low", "high"):
        values = {k: (s["choices"][0 if end == "low" else -1] if "choices" in s else s[end]) for k, s in space.items()}
        RecipeParser(prog="vit-pipeline search").parse([*shared, *as_flags(values), "--output_dir", str(output)])
    return training_args, metric, maximize, space


def _open_study(optuna, output: Path, space: dict, shared: list[str], *, seed: int, maximize: bool):
    """Create or continue the study in output/study.db, warning when its space or recipe settings changed."""
    storage = f"sqlite:///{output / 'study.db'}"
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, load_if_exists=True,
                                direction="maximize" if maximize else "minimize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    _close_interrupted(study)
    # A fresh seed per session: a continued study must not propose the same first values again.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=5)
    known_space = study.user_attrs.get("space")
    if known_space is not None and known_space != space:
        logger.warning("the search space differs from the one this study started with: the trials mix both")
    study.set_user_attr("space", json.loads(json.dumps(space)))
    if study.user_attrs.get("argv") not in (None, shared):
        logger.warning("this study's earlier trials ran with other recipe settings (%s): the trials mix both",
                       " ".join(study.user_attrs["argv"]))
    study.set_user_attr("argv", shared)
    return study


def _objective(space: dict, shared: list[str], output: Path, metric: str):
    """The trial function: train with the trial's values in output/trial-NNN, return its eval metric."""
    from vit_pipeline.commands.train import main as train

    def objective(trial):
        values = suggest(trial, space)
        run_dir = output / f"trial-{trial.number:03d}"
        trial.set_user_attr("output_dir", str(run_dir))
        logger.info("search trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in values.items()))
        # Trials never push; the best recipe keeps the recipe's push settings.
        metrics = train([*shared, *as_flags(values), "--output_dir", str(run_dir), "--push_to_hub", "false"],
                        callbacks=[pruning_callback(trial, metric)])
        if metric not in metrics:
            raise PipelineError(f"metric_for_best_model {metric} is not among the eval metrics "
                                f"({', '.join(sorted(metrics))})")
        return float(metrics[metric])

    return objective
