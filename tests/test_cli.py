"""The command line's last line of defence: an error nobody foresaw is one line plus a traceback file."""

from __future__ import annotations

import atexit
import gc
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, digits, save_tiny_vit, write_imagefolder
from vit_pipeline.cli import main


def _hostile_checkpoint(tmp_path: Path) -> Path:
    # A checkpoint whose image processor has two means for three channels: nothing checks that, and the batch
    # normalisation fails deep inside torch.
    model = save_tiny_vit(tmp_path / "model", num_labels=2)
    config = json.loads((model / "preprocessor_config.json").read_text())
    config["image_mean"] = [0.5, 0.5]
    (model / "preprocessor_config.json").write_text(json.dumps(config))
    return model


def test_unexpected_exception_is_one_line_and_a_traceback_file(tmp_path, capsys, monkeypatch):
    model = _hostile_checkpoint(tmp_path)
    data = write_imagefolder(tmp_path / "data", {"train": digits(n_per_class=4, classes=2)})
    args = ["train", "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir",
            str(tmp_path / "out"), *FAST, "--max_steps", "1"]
    monkeypatch.delenv("VIT_PIPELINE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"vit-pipeline: error: unexpected RuntimeError: The size of tensor a \(3\) must match .* "
                         r"\(full traceback in (\S+); VIT_PIPELINE_TRACEBACK=1 prints it\)", last)
    assert match, last
    assert "Traceback" not in stderr
    saved = Path(match.group(1)).read_text()
    assert saved.startswith("vit-pipeline ") and "Traceback (most recent call last)" in saved
    assert "RuntimeError: The size of tensor a (3)" in saved

    # VIT_PIPELINE_TRACEBACK=1: the exception itself comes out (Python prints its traceback).
    monkeypatch.setenv("VIT_PIPELINE_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match=r"The size of tensor a \(3\)"):
        main(args)


def test_console_script_freezes_the_collector_at_exit_and_in_process_callers_do_not(capsys):
    # The console script's process skips the interpreter's last full collection (0.9 s of every command on two
    # cores); a caller's own process (a test, a notebook) keeps its collector as it was.
    script = ("import atexit, gc, sys\n"
              "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
              "sys.argv = ['vit-pipeline', '--help']\n"
              "from vit_pipeline.cli import main\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "frozen True"
    handlers = atexit._ncallbacks()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "vit-pipeline" in capsys.readouterr().out
    assert atexit._ncallbacks() == handlers and gc.get_freeze_count() == 0
