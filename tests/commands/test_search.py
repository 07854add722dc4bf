"""`vit-pipeline search`: a 3-trial study on a tiny model writes its trials and a best recipe that trains as is; the
same command with a larger total adds trials to the sqlite study, and `--n_trials 0` only reports; pruning raises
TrialPruned from a real TrainerCallback; a trial whose worker stopped beating is failed and tried again; bad
invocations (unknown keys, bad ranges, bad storage URLs, missing drivers, another recipe's study) stop in one line.
Many workers on one PostgreSQL study: tests/commands/test_search_workers.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import FAST, run_cli_here, save_tiny_model
from vit_pipeline import PipelineError
from vit_pipeline.commands.search import main as search
from vit_pipeline.commands.search import pruning_callback, read_space


def write_search_recipe(root: Path, photos_parquet: Path) -> tuple[Path, Path]:
    """A recipe on a tiny 3-class ViT and the photo crops, and a two-parameter search space, in `root`."""
    model = save_tiny_model(root / "vit", "vit", num_labels=3)
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": str(model), "dataset_name": str(photos_parquet),
                                      "seed": 1, "horizontal_flip": False}))
    space = root / "space.yaml"
    space.write_text("learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\nweight_decay: {choices: [0.0, 0.05]}\n")
    return recipe, space


@pytest.fixture(scope="module")
def setup(tmp_path_factory, photos_parquet):
    return write_search_recipe(tmp_path_factory.mktemp("search"), photos_parquet)


def rows(path):
    with path.open() as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_three_trials_then_a_resumed_search_adds_trials_and_the_best_recipe_trains(setup, tmp_path):
    from vit_pipeline.commands.train import main as train

    recipe, space = setup
    out = tmp_path / "s"
    argv = [str(recipe), "--n_trials", "3", "--output_dir", str(out), "--space", str(space), *FAST]
    result = search(argv)
    assert result["n_trials"] == 3
    trials = rows(out / "trials.csv")
    assert [t["number"] for t in trials] == ["0", "1", "2"]
    for t in trials:
        assert t["state"] in ("COMPLETE", "PRUNED") and t["weight_decay"] in ("0.0", "0.05")
        assert 1e-4 <= float(t["learning_rate"]) <= 1e-2
        if t["state"] == "COMPLETE":
            assert 0.0 <= float(t["value"]) <= 1.0
    assert (out / "study.db").is_file() and (out / "optimization_history.png").stat().st_size > 0
    # Every finished trial has its accuracy's 95% interval; the best one says whether it is clearly better than the
    # next best (its accuracy outside that trial's interval), in trials.csv and in the best recipe's header.
    done = sorted((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: -float(t["value"]))
    for t in done:
        assert float(t["ci95_low"]) <= float(t["value"]) <= float(t["ci95_high"])
    assert [t["number"] for t in trials if t["best"]] == [done[0]["number"]]
    if len(done) > 1:
        within = float(done[1]["ci95_low"]) <= float(done[0]["value"]) <= float(done[1]["ci95_high"])
        assert done[0]["best"].startswith("within the 95% interval" if within else "clearly better")
        assert f"trial {done[1]['number']} (" in done[0]["best"]
    assert f"# Trial {done[0]['number']}: {done[0]['best']}." in (out / "best_recipe.yaml").read_text()
    best = yaml.safe_load((out / "best_recipe.yaml").read_text())
    assert best["learning_rate"] == pytest.approx(result["best_params"]["learning_rate"])
    assert best["output_dir"] == str(out / "best")

    # The same command with a larger total continues the study: 2 more trials, 5 in all, new values.
    result = search([*argv[:2], "5", *argv[3:]])
    trials = rows(out / "trials.csv")
    assert result["n_trials"] == 5 and [t["number"] for t in trials] == ["0", "1", "2", "3", "4"]
    assert len({t["learning_rate"] for t in trials}) == 5
    # --n_trials 0 (or the total already reached) only writes the reports again.
    (out / "trials.csv").unlink()
    assert search([*argv[:2], "0", *argv[3:]])["n_trials"] == 5 and len(rows(out / "trials.csv")) == 5

    # The best recipe runs with `vit-pipeline train` as it is.
    metrics = train([str(out / "best_recipe.yaml")])
    assert (out / "best" / "model.safetensors").is_file() and 0.0 <= metrics["accuracy"] <= 1.0
    assert json.loads((out / "best" / "eval_results.json").read_text())["eval_accuracy"] == metrics["accuracy"]


def test_the_pruning_callback_reports_each_evaluation_and_prunes():
    import optuna
    from transformers import TrainerControl, TrainerState

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    callback = pruning_callback(trial, "accuracy")
    state = TrainerState()
    state.global_step, state.epoch = 10, 1.0
    args = SimpleNamespace(eval_strategy="epoch")
    callback.on_evaluate(args, state, TrainerControl(), metrics={"eval_accuracy": 0.8})
    callback.on_evaluate(args, state, TrainerControl(), metrics={"eval_accuracy": 0.1})  # final re-evaluation
    state.global_step, state.epoch = 20, 2.0
    with pytest.raises(optuna.TrialPruned, match="eval_accuracy 0.2000 at epoch 2"):
        callback.on_evaluate(args, state, TrainerControl(), metrics={"eval_accuracy": 0.2})
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 0.8, 2: 0.2}
    # Evaluating by steps: the step is reported.
    steps = pruning_callback(study.ask(), "accuracy")
    with pytest.raises(optuna.TrialPruned, match="at step 20"):
        steps.on_evaluate(SimpleNamespace(eval_strategy="steps"), state, TrainerControl(), metrics={"eval_accuracy": 0})


@pytest.mark.parametrize("text, message", [
    ("learnig_rate: {low: 1, high: 2}", "unknown recipe key 'learnig_rate'"),
    ("learning_rate: {low: 1.0e-3, high: 1.0e-5}", "needs numbers low < high"),
    ("weight_decay: {choices: []}", "choices must be a non-empty list"),
    ("learning_rate: {low: 0.0, high: 1.0, log: true}", "a log range needs low > 0"),
])
def test_bad_spaces_are_refused_in_one_line(text, message, tmp_path):
    from vit_pipeline.config import RecipeParser

    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message):
        read_space(str(path), set(RecipeParser().known_fields()), "vit")


def test_default_space_follows_the_family():
    assert read_space(None, set(), "resnet")["learning_rate"]["high"] > read_space(None, set(), "vit")[
        "learning_rate"]["high"]


@pytest.mark.parametrize("storage, message", [
    ("not a url", "--storage 'not a url' is not a database URL"),
    ("mysql+pymysql://me@127.0.0.1/db", "--storage mysql:// needs the pymysql driver: pip install pymysql"),
    ("nosuchdb://me@127.0.0.1/db", "SQLAlchemy has no database 'nosuchdb'"),
])
def test_bad_storage_urls_stop_in_one_line_before_training(setup, tmp_path, storage, message):
    recipe, space = setup
    result = run_cli_here("search", str(recipe), "--n_trials", "2", "--output_dir", str(tmp_path / "s"),
                          "--storage", storage)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("s/trial-*"))


def test_postgres_without_its_driver_names_the_extra(setup, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    recipe, _ = setup
    result = run_cli_here("search", str(recipe), "--n_trials", "1", "--output_dir", str(tmp_path / "s"),
                          "--storage", "postgresql://me:secret@127.0.0.1:9/db")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "postgresql:// needs the psycopg driver: pip install 'vit-pipeline[postgres]'" in result.stderr


def test_a_study_of_another_recipe_or_space_is_refused_before_training(setup, tmp_path):
    recipe, space = setup
    out = tmp_path / "s"
    result = run_cli_here("search", str(recipe), "--n_trials", "0", "--output_dir", str(out))
    assert result.returncode == 2 and "there is no study 'vit-pipeline'" in result.stderr  # nothing to report yet
    optuna_study(out, recipe, space)
    for other in (["--space", str(space), "--seed", "2"], []):  # another seed; the default space instead of space.yaml
        result = run_cli_here("search", str(recipe), "--n_trials", "1", "--output_dir", str(out), *other)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "was started with another recipe or search space" in result.stderr
    assert not list(out.glob("trial-*"))


def optuna_study(out, recipe, space, *flags):
    """A sqlite study in `out` started by `search` with this recipe, space and flags (no trial run)."""
    from vit_pipeline.commands.search import _check_recipe_and_space, _parse_search_options
    from vit_pipeline.training.study import open_storage, open_study, recipe_fingerprint

    options, shared = _parse_search_options([str(recipe), "--n_trials", "1", "--output_dir", str(out), "--space",
                                             str(space), *flags])
    out.mkdir(parents=True, exist_ok=True)
    _, _, maximize, space_read, resolved = _check_recipe_and_space(shared, str(space), out)
    return open_study(open_storage(options["storage"], 1), "vit-pipeline", recipe_fingerprint(resolved, space_read),
                      maximize=maximize, create=True)


@pytest.mark.slow
def test_a_trial_whose_worker_stopped_beating_is_failed_and_tried_again(setup, tmp_path):
    import time

    import optuna

    recipe, space = setup
    out = tmp_path / "s"
    # A worker killed during its first trial: the trial stays RUNNING, its last heartbeat gets old.
    killed = optuna_study(out, recipe, space, *FAST)
    running = killed.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                          "weight_decay": optuna.distributions.CategoricalDistribution([0.0, 0.05])})
    killed._storage.record_heartbeat(running._trial_id)
    time.sleep(2.5)  # more than twice --heartbeat_interval 1
    search([str(recipe), "--n_trials", "1", "--output_dir", str(out), "--space", str(space), "--heartbeat_interval",
            "1", *FAST])
    trials = optuna.load_study(study_name="vit-pipeline", storage=f"sqlite:///{out / 'study.db'}").trials
    assert [t.state.name for t in trials][0] == "FAIL" and trials[1].state.name in ("COMPLETE", "PRUNED")
    assert trials[1].params == running.params  # the same values, tried again
    assert trials[1].system_attrs["failed_trial"] == 0 and len(trials) == 2  # the retry is the study's one trial
    assert [r["state"] for r in rows(out / "trials.csv")] == ["FAIL", trials[1].state.name]
