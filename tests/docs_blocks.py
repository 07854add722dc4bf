"""The code blocks of the documentation (README.md and docs/), and who runs them.

Every fenced block of a page carries, on the line just above it, an HTML comment that says which test runs it or why
none can:

    <!-- run: tests/commands/test_audit.py::test_audit_finds_planted_faults -->
    <!-- needs: hub -->     (or gpu, cluster: what this machine and CI do not have)

A test that runs a block reads it from the page with `commands(page, test)`, so the page and the test cannot drift.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from tests.conftest import REPO

FENCE = re.compile(r"(?:^<!--\s*(?P<kind>run|needs):\s*(?P<what>[^>]*?)\s*-->\n)?"
                   r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    lang: str
    body: str
    kind: str | None  # "run", "needs" or None (unmarked)
    what: str | None  # the test id, or what the block needs


def blocks(page: str) -> list[Block]:
    """Every fenced block of `page` (a path relative to the repository root), with its marker."""
    text = (REPO / page).read_text()
    return [Block(page, m["lang"], m["body"], m["kind"], m["what"]) for m in FENCE.finditer(text)]


def pages() -> list[str]:
    """README.md and every page under docs/."""
    return ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]


def commands(page: str, test: str, program: str = "vit-pipeline") -> list[list[str]]:
    """The `program` command lines (split as the shell would, comments and line continuations handled) of the blocks
    of `page` marked `<!-- run: TEST -->`, where `test` is the test's id (`tests/...py::name`) or its name."""
    found = []
    for block in blocks(page):
        if block.kind != "run" or not (block.what == test or block.what.endswith(f"::{test}")):
            continue
        for line in block.body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == program:
                found.append(words[1:])
    assert found, f"{page} has no {program} command marked <!-- run: {test} -->"
    return found

