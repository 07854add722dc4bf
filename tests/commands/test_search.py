"""`vit-pipeline search`: a 3-trial study on a tiny model writes its trials and a best recipe that trains as is; the
same command again adds trials to the sqlite study; pruning raises TrialPruned from a real TrainerCallback; bad
invocations (several processes, unknown keys, bad ranges) stop in one line."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import FAST, run_cli, save_tiny_model
from vit_pipeline import PipelineError
from vit_pipeline.commands.search import main as search
from vit_pipeline.commands.search import pruning_callback, read_space


@pytest.fixture(scope="module")
def setup(tmp_path_factory, photos_parquet):
    root = tmp_path_factory.mktemp("search")
    model = save_tiny_model(root / "vit", "vit", num_labels=3)
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": str(model), "dataset_name": str(photos_parquet),
                                      "seed": 1, "horizontal_flip": False}))
    space = root / "space.yaml"
    space.write_text("learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\nweight_decay: {choices: [0.0, 0.05]}\n")
    return recipe, space


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

    # The same command again continues the study: 2 more trials, 5 in all, new values.
    result = search([*argv[:2], "2", *argv[3:]])
    trials = rows(out / "trials.csv")
    assert result["n_trials"] == 5 and [t["number"] for t in trials] == ["0", "1", "2", "3", "4"]
    assert len({t["learning_rate"] for t in trials}) == 5

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


def test_refused_under_several_processes(setup, tmp_path):
    recipe, _ = setup
    result = run_cli("search", str(recipe), "--n_trials", "2", "--output_dir", str(tmp_path / "s"),
                     env={"WORLD_SIZE": "2"})
    assert result.returncode == 2 and "search runs its trials one after another" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_trial_cut_off_by_an_interruption_is_marked_failed_and_tried_again(setup, tmp_path):
    import optuna

    recipe, space = setup
    out = tmp_path / "s"
    out.mkdir()
    storage = f"sqlite:///{out / 'study.db'}"
    # A search killed during its first trial leaves it RUNNING in the study.
    killed = optuna.create_study(study_name="vit-pipeline", storage=storage, direction="maximize")
    running = killed.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                          "weight_decay": optuna.distributions.CategoricalDistribution([0.0, 0.05])})
    search([str(recipe), "--n_trials", "1", "--output_dir", str(out), "--space", str(space), *FAST])
    trials = optuna.load_study(study_name="vit-pipeline", storage=storage).trials
    assert [t.state.name for t in trials][0] == "FAIL" and trials[1].state.name in ("COMPLETE", "PRUNED")
    assert trials[1].params == running.params  # the same values, tried again
    assert [r["state"] for r in rows(out / "trials.csv")] == ["FAIL", trials[1].state.name]
