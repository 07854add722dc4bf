"""Many workers at once: `vit-pipeline search` processes sharing one study in a real PostgreSQL server (a throwaway
cluster started with initdb / pg_ctl in a temporary folder, on 127.0.0.1), and `vit-pipeline compare` processes
sharing one output folder. Every worker is a real `python -m vit_pipeline` process, as a user starts them, running
the command docs/many-machines.md shows (with a tiny recipe, this server and small totals appended)."""

from __future__ import annotations

import csv
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST, REPO, run_cli_here, save_tiny_model
from tests.docs_blocks import commands

ONE_EPOCH = [*FAST, "--num_train_epochs", "1"]
PAGE = "docs/many-machines.md"


def _pg_bin() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[::-1]), None)
    return Path(found).resolve().parent if found else None  # psql and createdb sit beside the real initdb


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own on 127.0.0.1 (password auth over TCP): yields the URL of database `study`
    owned by user `vit` (password `secret`). Run as the `postgres` user when the tests run as root (initdb refuses
    root)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb): .ci/run installs Debian's postgresql package")
    root = Path(tempfile.mkdtemp(prefix="vit-pipeline-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    (root / "pw").write_text("admin\n")
    port = _free_port()

    def run(*args):
        subprocess.run([*as_user, *map(str, args)], check=True, capture_output=True, timeout=60)

    try:
        if as_user:
            shutil.chown(root / "pw", "postgres")
        run(bindir / "initdb", "-D", root / "data", "-U", "postgres", "--pwfile", root / "pw", "--auth-local", "trust",
            "--auth-host", "scram-sha-256", "--no-sync", "-E", "UTF8")
        run(bindir / "pg_ctl", "-D", root / "data", "-l", root / "log", "-w", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off", "start")
        run(bindir / "psql", "-h", root, "-p", port, "-U", "postgres", "-c", "CREATE USER vit PASSWORD 'secret'")
        run(bindir / "createdb", "-h", root, "-p", port, "-U", "postgres", "-O", "vit", "study")
        yield f"postgresql://vit:secret@127.0.0.1:{port}/study"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, photos_parquet):
    from tests.commands.test_search import write_search_recipe

    root = tmp_path_factory.mktemp("workers")
    return (*write_search_recipe(root, photos_parquet), root)


def start(*args: str, log: Path) -> subprocess.Popen:
    """`python -m vit_pipeline ARGS` in the background, as run_cli runs it, its output in `log`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "vit_pipeline", *args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_all(workers: list[subprocess.Popen], logs: list[Path], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    for worker, log in zip(workers, logs, strict=True):
        worker.wait(timeout=max(1.0, deadline - time.monotonic()))
        assert worker.returncode in (0, -signal.SIGKILL), log.read_text()[-3000:]


@pytest.mark.slow
def test_three_workers_share_one_postgres_study_and_a_killed_workers_trial_is_retried(postgres, recipe, tmp_path):
    import optuna

    from vit_pipeline.commands.train import main as train

    path, space, _ = recipe
    documented, report, train_best = commands(PAGE, "test_three_workers_share_one_postgres_study_and_a_killed_"
                                                    "workers_trial_is_retried")
    assert documented[0] == report[0] == "search" and train_best[0] == "train" and "--storage" in documented
    # Each worker keeps its own trial folders (as on machines without a shared filesystem).
    folders = [tmp_path / f"worker{i}" for i in range(3)]
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers = [start("search", str(path), *documented[2:], "--n_trials", "6", "--output_dir", str(folder), "--space",
                     str(space), "--storage", postgres, "--heartbeat_interval", "2", *ONE_EPOCH, log=log)
               for folder, log in zip(folders, logs, strict=True)]
    try:
        # Worker 0 is killed (SIGKILL: no chance to clean up) in the middle of its first trial.
        deadline = time.monotonic() + 400  # three processes importing torch on two busy cores take minutes
        killed = None
        while killed is None and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                trials = optuna.load_study(study_name="vit-pipeline", storage=postgres).trials
            except KeyError:
                continue
            killed = next((t for t in trials if t.state.name == "RUNNING" and str(folders[0]) in
                           t.user_attrs.get("output_dir", "")), None)
        assert killed is not None, logs[0].read_text()[-3000:]
        workers[0].send_signal(signal.SIGKILL)
        wait_all(workers, logs)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()

    study = optuna.load_study(study_name="vit-pipeline", storage=postgres)
    states = [t.state.name for t in study.trials]
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    # Exactly the study's total, each with its own values, plus the killed trial: failed, its values tried again.
    assert len(done) == 6 and states.count("FAIL") == 1 and len(study.trials) == 7, states
    assert len({tuple(sorted(t.params.items())) for t in done}) == 6
    assert study.trials[killed.number].state.name == "FAIL"
    retry = next(t for t in done if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.params == killed.params and str(folders[0]) not in retry.user_attrs["output_dir"]
    # The survivors ran every trial, each in one folder; both wrote the same reports once the study was done.
    ran = sorted(p.name for folder in folders[1:] for p in folder.glob("trial-*"))
    assert ran == sorted(f"trial-{t.number:03d}" for t in done)
    best = [yaml.safe_load((folder / "best_recipe.yaml").read_text()) for folder in folders[1:]]
    assert best[0] == {**best[1], "output_dir": str(folders[1] / "best")}  # the same trial's recipe, from the study
    for folder in folders[1:]:
        with (folder / "trials.csv").open() as file:
            assert [r["state"] for r in csv.DictReader(file)] == states

    # Any worker reports at any time (--n_trials 0), and the best recipe trains as it is.
    (folders[1] / "best_recipe.yaml").unlink()
    assert report[report.index("--n_trials") + 1] == "0" and train_best[1].endswith("/best_recipe.yaml")
    result = run_cli_here("search", str(path), *report[2:], "--output_dir", str(folders[1]), "--space", str(space),
                          "--storage", postgres, *ONE_EPOCH)
    assert result.returncode == 0, result.stderr
    best = yaml.safe_load((folders[1] / "best_recipe.yaml").read_text())
    assert best["learning_rate"] == pytest.approx(study.best_params["learning_rate"])
    metrics = train([str(folders[1] / "best_recipe.yaml")])
    assert (folders[1] / "best" / "model.safetensors").is_file() and 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.parametrize("what", ["bad credentials", "unreachable", "another recipe"])
def test_database_problems_stop_in_one_line_before_training(postgres, recipe, tmp_path, what):
    path, space, _ = recipe
    url, extra = postgres, []
    if what == "bad credentials":
        url = postgres.replace("vit:secret@", "vit:wrong@")
        message = 'password authentication failed for user "vit"'
    elif what == "unreachable":
        url = postgres.rsplit(":", 1)[0] + f":{_free_port()}/study"
        message = "Connection refused"
    else:
        from vit_pipeline.training.study import open_storage, open_study

        # A study another recipe started: its fingerprint is not this recipe's.
        open_study(open_storage(postgres, 60), "other", "0123456789abcdef", maximize=True, create=True)
        extra = ["--study_name", "other"]
        message = "study 'other' in postgresql://vit:***@127.0.0.1"
    result = run_cli_here("search", str(path), "--n_trials", "1", "--output_dir", str(tmp_path / "s"), "--space",
                          str(space), "--storage", url, *extra, *ONE_EPOCH)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "secret" not in result.stderr
    assert not list(tmp_path.glob("s/trial-*"))


@pytest.mark.slow
def test_two_compare_workers_train_each_model_once_and_the_last_writes_the_comparison(recipe, tmp_path):
    from vit_pipeline.commands.compare import main as compare

    path, _, root = recipe
    resnet = save_tiny_model(root / "resnet", "resnet") if not (root / "resnet").exists() else root / "resnet"
    out = tmp_path / "cmp"
    documented = commands(PAGE, "test_two_compare_workers_train_each_model_once_and_the_last_writes_the_comparison")[0]
    assert documented[0] == "compare"
    argv = [str(path), *documented[2:], "--models", str(root / "vit"), str(resnet), "--output_dir", str(out),
            *ONE_EPOCH]
    logs = [tmp_path / f"compare{i}.log" for i in range(2)]
    workers = [start("compare", *argv, log=log) for log in logs]
    try:
        wait_all(workers, logs)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    text = [log.read_text() for log in logs]
    assert all(w.returncode == 0 for w in workers), text
    # Each model trained by exactly one worker; the comparison written once both were finished.
    trained = [line for t in text for line in t.splitlines() if "compare [" in line and " -> " in line]
    assert sorted(line.split("] ")[1].split(" -> ")[0] for line in trained) == sorted([str(root / "vit"), str(resnet)])
    with (out / "comparison.csv").open() as file:
        assert len(list(csv.DictReader(file))) == 2
    # The same command again only reports.
    stamp = (out / "comparison.csv").stat().st_mtime_ns
    rows = compare(argv)
    assert len(rows) == 2 and (out / "comparison.csv").stat().st_mtime_ns > stamp
    assert all((out / r["folder"] / "comparison_row.json").is_file() for r in rows)


@pytest.mark.slow
def test_a_torchrun_worker_trains_each_trial_on_all_its_processes(recipe, tmp_path):
    from tests.training.test_distributed import launch

    path, space, _ = recipe
    out = tmp_path / "s"
    # Rank 0 talks to the (sqlite) study and sends each trial to rank 1; both train it together, then stop together.
    result = launch("torchrun", ["search", str(path), "--n_trials", "2", "--output_dir", str(out), "--space",
                                 str(space), *ONE_EPOCH])
    assert result.returncode == 0, result.stderr[-3000:]
    with (out / "trials.csv").open() as file:
        trials = list(csv.DictReader(file))
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:
        assert "- num_processes: 2" in (Path(trial["output_dir"]) / "README.md").read_text()
    assert yaml.safe_load((out / "best_recipe.yaml").read_text())["output_dir"] == str(out / "best")


WORKER = """
import sys, time
from vit_pipeline.training.study import open_storage, open_study, run_until_total
study = open_study(open_storage(sys.argv[1], 1), "s", "f", maximize=True, create=True)
run_until_total(study, 8, lambda trial: time.sleep(0.1) or trial.suggest_float("x", 0, 1), seed=0, poll_s=0.2)
"""


@pytest.mark.slow
def test_workers_started_together_never_run_more_than_the_total(tmp_path):
    import optuna

    # Three workers on one new sqlite study (the default storage, as on one machine), a total of 8 quick trials: they
    # all create the database at once, then count and ask under the study's lock.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url], env=env, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    errors = [worker.communicate(timeout=300)[1] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], errors
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 8
    assert len({t.params["x"] for t in trials}) == 8
    assert optuna.load_study(study_name="s", storage=url).user_attrs["recipe_fingerprint"] == "f"
