"""CI runs what the README says it runs: the test command of `.ci/run` is the README's, verbatim, ruff included."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_ci_runs_the_readme_test_command():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(ci) == 1
    command = ci[0]
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert command in [line for block in blocks for line in block.splitlines()]
    # Lint before the tests: a ruff error fails CI before any test runs.
    assert "ruff check . && HF_HUB_OFFLINE=1 pytest" in command
