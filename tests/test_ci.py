"""CI runs what the README says it runs: the test command of `.ci/run` is the README's (and getting started's),
verbatim, ruff and the strict docs build included."""

from __future__ import annotations

from tests.conftest import REPO
from tests.docs_blocks import block

PAGES = ("README.md", "docs/getting-started.md")


def test_ci_runs_the_readme_test_command():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(ci) == 1
    command = ci[0]
    for page in PAGES:
        assert block(page, "test_ci_runs_the_readme_test_command", "bash").body.strip() == command, page
    # Lint and build the docs before the tests: a ruff error or a broken link fails CI before any test runs.
    assert "ruff check . && mkdocs build --strict && HF_HUB_OFFLINE=1 pytest" in command
