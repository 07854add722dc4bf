"""`vit-pipeline search RECIPE --n_trials N --output_dir S [--space SPACE.yaml] [--storage URL] [--field value ...]`:
hyperparameter search with optuna around the train command's own code, in-process.

Each trial is a normal `vit-pipeline train` run in `S/trial-<n>` with the recipe, the shared flags and the trial's
values. A `TrainerCallback` reports the per-epoch eval metric (`metric_for_best_model`) to the trial and stops a bad
one early (optuna's median pruner). The study lives in `S/study.db` (sqlite) or the database `--storage` names
(`postgresql://user@host/db`): the same command started by several workers (GPUs, machines) shares it, and
`--n_trials` is the study's total (`pipeline/training/study.py`); the same command again continues it up to that
total (`--n_trials 0` only reports); a trial whose worker died is failed and its values tried again. Writes
`S/trials.csv`, `S/best_recipe.yaml` (runs with `vit-pipeline train` as is) and `S/optimization_history.png`.

SPACE.yaml maps recipe keys to ranges: `learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}`, `num_train_epochs:
{low: 2, high: 6}` (integers), `weight_decay: {choices: [0.0, 0.05]}`. Without it, a space for the model family.
"""

from __future__ import annotations

import csv
import json
import logging
import socket
from pathlib import Path

import yaml

from vit_pipeline import PipelineError
from vit_pipeline.commands.compare import split_argv
from vit_pipeline.config.arguments import RECIPE_FILE
from vit_pipeline.training.study import (
    Followers,
    default_storage,
    is_launched,
    open_storage,
    open_study,
    recipe_fingerprint,
    run_until_total,
    shown_url,
    store_trial_recipe,
)
from vit_pipeline.utils import one_line, plain, setup_logging

logger = logging.getLogger("vit_pipeline")

USAGE = """usage: vit-pipeline search RECIPE.yaml --n_trials N --output_dir S [--space SPACE.yaml] [--storage URL]
                           [--study_name NAME] [--heartbeat_interval SECONDS] [--field value ...]

Runs optuna trials of the recipe (each a train run in S/trial-<n>) until the study holds N, pruning bad ones on the
per-epoch eval metric, and writes S/trials.csv, S/best_recipe.yaml and S/optimization_history.png. The study is kept
in S/study.db, or in the database of --storage (postgresql://user@host/db): the same command on several GPUs or
machines shares it, N being the study's total; --n_trials 0 only writes the reports. A trial whose worker stops
sending heartbeats (every --heartbeat_interval seconds, 60 by default) is failed after twice that and tried again.
SPACE.yaml: `key: {low: ..., high: ..., log: true}` or `key: {choices: [...]}`."""

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


def pruning_callback(trial, metric: str, followers=None):
    """A `TrainerCallback` that reports each evaluation's `metric` to `trial` (at its epoch, or its step when
    evaluating by steps) and raises `optuna.TrialPruned` when the pruner says the trial is worse than the others
    there. Under torchrun (`followers`), rank 0 decides and sends the decision; the others (`trial` None) receive
    it, so every process stops at the same evaluation."""
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
            if trial is not None:
                trial.report(float(value), step=step)
            prune = trial.should_prune() if trial is not None else None
            if followers is not None:
                prune = followers.send(prune)
            if prune:
                raise optuna.TrialPruned(f"eval_{metric} {value:.4f} at {'epoch' if per_epoch else 'step'} {step}")

    callback = ReportToTrial()
    callback.reported = set()
    return callback


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
               "duration_s", "output_dir", "host"]
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
                "output_dir": t.user_attrs.get("output_dir", ""), "host": t.user_attrs.get("host", ""),
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
    `note` (whether it is clearly better than the next, `best_trial_mark`) goes into its header.

    Read from the study (any worker writes it, whether or not it sees the trial's folder), else the trial's folder.
    """
    try:
        best = study.best_trial
    except ValueError:
        return None
    recipe_file = Path(best.user_attrs.get("output_dir", "")) / RECIPE_FILE
    recipe = best.user_attrs.get("recipe") or (yaml.safe_load(recipe_file.read_text()) if recipe_file.is_file()
                                               else None)
    if not recipe:
        return None
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
    options, shared = _parse_search_options(argv)
    n_trials, output = options["n_trials"], options["output_dir"]
    try:
        import optuna
    except ImportError as err:
        raise PipelineError("search needs the search extra: pip install 'vit-pipeline[search]'") from err
    # The recipe and flags, checked once; the space's keys and both ends of each range are checked too.
    training_args, metric, maximize, space, recipe = _check_recipe_and_space(shared, options["space"], output)

    setup_logging()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A torchrun launch is one worker: rank 0 talks to the study, the other processes train what it sends.
    followers = Followers(training_args) if is_launched() else None
    if followers is not None and not followers.leader:
        followers.follow(_train_trial, lambda f: pruning_callback(None, metric, f))
        return {}
    try:
        output.mkdir(parents=True, exist_ok=True)
        study = _open_study(options, space, recipe, maximize=maximize, create=n_trials > 0)
        logger.info("search: %d trial(s) in all of %s on eval %s (%s), study %s in %s (%d trial(s) so far)", n_trials,
                    ", ".join(space), metric, "maximize" if maximize else "minimize", study.study_name,
                    shown_url(options["storage"]), len(study.trials))
        if n_trials:
            run_until_total(study, n_trials, _objective(space, shared, output, metric, followers),
                            seed=training_args.seed, poll_s=min(options["heartbeat_interval"], 15))
    finally:
        if followers is not None:
            followers.send(None)  # the other processes of this worker stop
    # Written by every worker, at any time: what has finished so far.
    write_trials(study, space, output / "trials.csv", metric, maximize)
    if any(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials):
        write_history(study, metric, output / "optimization_history.png", maximize)
    _, note = best_mark(study, metric, maximize)  # is the best trial clearly better than the next?
    best_recipe = write_best_recipe(study, output, metric, push_to_hub=training_args.push_to_hub, note=note)
    if best_recipe is None:
        raise PipelineError(f"no trial of study {study.study_name} completed (all pruned or failed): see "
                            f"{output / 'trials.csv'}")
    logger.info("search: best trial %d, eval %s %.4f (%s), %s; rerun it with: vit-pipeline train %s",
                study.best_trial.number, metric, study.best_value,
                ", ".join(f"{k}={v}" for k, v in study.best_params.items()), note, best_recipe)
    return {"best_value": study.best_value, "best_params": study.best_params, "n_trials": len(study.trials)}


def _parse_search_options(argv: list[str]) -> tuple[dict, list[str]]:
    """search's own options (--n_trials, --output_dir, --space, --storage, --study_name, --heartbeat_interval),
    checked; the rest is the recipe and its flags."""
    own, shared = split_argv(argv, {"n_trials": "one", "output_dir": "one", "space": "one", "storage": "one",
                                    "study_name": "one", "heartbeat_interval": "one"})
    try:
        n_trials = int(own.get("n_trials", ""))
    except ValueError:
        raise PipelineError(f"search needs --n_trials N, the study's total number of trials (got "
                            f"{own.get('n_trials')!r}; 0 only writes the reports)") from None
    if n_trials < 0:
        raise PipelineError(f"--n_trials must be 0 (report only) or more (got {n_trials})")
    if not own.get("output_dir"):
        raise PipelineError("search needs --output_dir S (the study, trials and best recipe are written there)")
    try:
        heartbeat = int(own.get("heartbeat_interval", "60"))
    except ValueError:
        heartbeat = 0
    if heartbeat < 1:
        raise PipelineError(f"--heartbeat_interval must be a whole number of seconds, at least 1 (got "
                            f"{own.get('heartbeat_interval')!r})")
    output = Path(own["output_dir"]).resolve()
    return {"n_trials": n_trials, "output_dir": output, "space": own.get("space"),
            "storage": own.get("storage") or default_storage(output), "study_name": own.get("study_name") or
            STUDY_NAME, "heartbeat_interval": heartbeat}, shared


def _check_recipe_and_space(shared: list[str], space_file: str | None, output: Path) -> tuple[object, str, bool, dict,
                                                                                            dict]:
    """Parse the recipe once, read the space, and parse the recipe at both ends of every range (bad values stop the
    search before any trial). Returns the training arguments, the metric, whether it is maximized, the space and the
    resolved recipe."""
    from vit_pipeline.config import RecipeParser
    from vit_pipeline.config.recipe import resolved_recipe
    from vit_pipeline.model.load import load_config

    parser = RecipeParser(prog="vit-pipeline search")
    model_args, data_args, training_args, _ = parser.parse([*shared, "--output_dir", str(output / "trial-check")])
    metric = (training_args.metric_for_best_model or "loss").removeprefix("eval_")
    maximize = bool(training_args.greater_is_better) if training_args.greater_is_better is not None else (
        metric != "loss")
    space = read_space(space_file, set(parser.known_fields()), load_config(model_args).model_type)
    for end in ("low", "high"):
        values = {k: (s["choices"][0 if end == "low" else -1] if "choices" in s else s[end]) for k, s in space.items()}
        RecipeParser(prog="vit-pipeline search").parse([*shared, *as_flags(values), "--output_dir", str(output)])
    return training_args, metric, maximize, space, resolved_recipe(model_args, data_args, training_args)


def _open_study(options: dict, space: dict, recipe: dict, *, maximize: bool, create: bool):
    """Open the study's database and create or join the study, refusing one started with another recipe or space.

    Raises:
        PipelineError: the database cannot be reached or its driver is missing, or the study is another recipe's.
    """
    storage = open_storage(options["storage"], options["heartbeat_interval"])
    space = json.loads(json.dumps(space))
    study = open_study(storage, options["study_name"], recipe_fingerprint(recipe, space), maximize=maximize,
                       create=create)
    study.set_user_attr("space", space)
    return study


def _train_trial(argv: list[str], callbacks: list) -> dict:
    """One trial's training run: the train command in this process (on every process of a torchrun worker)."""
    from vit_pipeline.commands.train import main as train

    return train(argv, callbacks=callbacks)


def _objective(space: dict, shared: list[str], output: Path, metric: str, followers=None):
    """The trial function: train with the trial's values in output/trial-NNN, return its eval metric."""

    def objective(trial):
        values = suggest(trial, space)
        run_dir = output / f"trial-{trial.number:03d}"
        trial.set_user_attr("output_dir", str(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        logger.info("search trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in values.items()))
        # Trials never push; the best recipe keeps the recipe's push settings.
        run_argv = [*shared, *as_flags(values), "--output_dir", str(run_dir), "--push_to_hub", "false"]
        if followers is not None:
            followers.send(run_argv)
        metrics = _train_trial(run_argv, [pruning_callback(trial, metric, followers)])
        if metric not in metrics:
            raise PipelineError(f"metric_for_best_model {metric} is not among the eval metrics "
                                f"({', '.join(sorted(metrics))})")
        store_trial_recipe(trial, run_dir / RECIPE_FILE)
        return float(metrics[metric])

    return objective
