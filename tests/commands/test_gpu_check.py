"""benchmarks/gpu_check.sh: valid bash, and its dry mode (toy sizes on the CPU) runs every step and writes the JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_gpu_check_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_gpu_check_fails_fast_without_its_environment(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env={**os.environ, "PYTHON": str(fake)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert not (tmp_path / "out" / "photos").exists()


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "GPU_CHECK_DRY": "1", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["dry_run"] and summary["passed"]
    assert set(summary["benchmark"]) == {"pipeline", "reference"}
    for name in ("pipeline", "reference"):
        figures = summary["benchmark"][name]
        assert figures["end_to_end_images_per_s"] > 0 and figures["peak_memory_mib"] > 0
    for backend in ("trainer", "accelerate"):
        tune = summary["fine_tune"][backend]
        assert tune["images_per_s"] > 0 and tune["peak_memory_mib"] > 0
        assert 0 <= tune["accuracy_before"] <= 1 and 0 <= tune["accuracy_after"] <= 1
    assert "recipe / reference end to end" in result.stdout
    assert re.search(r"benchmark pipeline, end to end / model only\s+\d+%", result.stdout), result.stdout
