"""A built wheel, installed without `-e`, runs every command from any folder: the card template, the offline evaluate
modules and the benchmark's reference configuration are package data, found without the source tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# What a source distribution of the project holds (the wheel is built from a copy: the checkout stays clean).
SOURCES = ("pyproject.toml", "README.md", "pipeline", "model_cards")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources, installed (no dependencies: the test venv has them) into a folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    wheels, target = root / "wheels", root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels),
                            str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("vit_pipeline-*.whl")
    done = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m vit_pipeline ARGS` with the installed copy first on the path and a folder outside the checkout."""
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# One process of the installed copy answers every command's --help and writes the Space: each `python -m vit_pipeline`
# pays some seconds of imports here, and `vit_pipeline.cli.main` is what `python -m vit_pipeline` runs.
EVERY_HELP = """
import contextlib, io, json, sys
from vit_pipeline.cli import COMMANDS, main

def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code
    return {"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()[-2000:]}

runs = [run([command, "--help"]) for command in COMMANDS] + [run(["demo", "org/name", "--write_space", "space"])]
print(json.dumps({"modules": sorted(m.__file__ for m in list(sys.modules.values())
                                    if m.__name__.startswith("vit_pipeline") and getattr(m, "__file__", None)),
                  "runs": runs}))
"""


@pytest.mark.slow
def test_the_installed_wheel_runs_every_command_from_any_folder(installed, tmp_path):
    # Package data: the card template, the evaluate modules, the benchmark reference; all from the installed copy.
    found = run_installed(installed, tmp_path, "-c", "; ".join([
        "import vit_pipeline",
        "from vit_pipeline.publish.card import template_path",
        "from vit_pipeline.evaluation.metrics import MODULES_DIR",
        "from vit_pipeline.training.throughput import REFERENCE_FILE",
        "from vit_pipeline.commands.benchmark import read_reference",
        "print(vit_pipeline.__file__, template_path(), MODULES_DIR, REFERENCE_FILE,"
        " read_reference(str(REFERENCE_FILE))[0],"
        " sep='\\n')"]))
    assert found.returncode == 0, found.stderr[-3000:]
    # The import name is the distribution's own: no top-level `pipeline` is installed beside it.
    assert (installed / "vit_pipeline").is_dir() and not (installed / "pipeline").exists()
    where, template, modules, reference, kind = found.stdout.split()
    assert where.startswith(str(installed)), found.stdout  # not the source tree
    assert all(path.startswith(str(installed)) and Path(path).exists() for path in (template, modules, reference))
    assert (Path(modules) / "accuracy" / "accuracy.py").is_file() and kind == "example_script"
    # `python -m vit_pipeline --help`: the usage names every command.
    usage = run_installed(installed, tmp_path, "-m", "vit_pipeline", "--help")
    assert usage.returncode == 0 and "train" in usage.stdout and "benchmark" in usage.stdout
    from vit_pipeline.cli import COMMANDS

    # Every command answers --help, and the Space files come from the installed modules (the page and the
    # attention rollout); every pipeline module imported on the way is the installed one.
    shown = run_installed(installed, tmp_path, "-c", EVERY_HELP)
    assert shown.returncode == 0, shown.stderr[-3000:]
    answers = json.loads(shown.stdout.strip().splitlines()[-1])
    assert answers["modules"] and all(path.startswith(str(installed)) for path in answers["modules"])
    *helps, space = answers["runs"]
    assert [run["argv"][0] for run in helps] == list(COMMANDS)
    for run in helps:
        assert run["code"] == 0 and run["stdout"].startswith("usage:"), f"{run['argv']}: {run['stderr']}"
    assert space["code"] == 0, space["stderr"]
    assert sorted(p.name for p in (tmp_path / "space").iterdir()) == ["README.md", "app.py", "cam.py",
                                                                       "requirements.txt", "rollout.py"]
    # A tiny training run: metrics through the packaged evaluate modules, the card from the packaged template.
    trained = run_installed(installed, tmp_path, "-m", "vit_pipeline", "train",
                            str(REPO / "recipes" / "quickstart.yaml"),
                            "--model_name_or_path", str(REPO / "recipes" / "models" / "vit-tiny-digits"),
                            "--output_dir", "out", "--num_train_epochs", "1", "--max_train_samples", "64",
                            "--max_eval_samples", "32", "--dataloader_num_workers", "0")
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = tmp_path / "out"
    assert "eval_accuracy" in json.loads((out / "eval_results.json").read_text())
    assert "## Training procedure" in (out / "README.md").read_text()
