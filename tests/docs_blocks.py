"""The code blocks of the documentation (README.md and docs/), and who runs them.

Every fenced block of a page carries, on the line just above it, an HTML comment that says which test runs it or why
none can:

    <!-- run: tests/commands/test_audit.py::test_audit_finds_planted_faults -->
    <!-- needs: hub -->     (or gpu, cluster: what this machine and CI do not have)

A test that runs a block reads it from the page with `commands(page, test)` (or `blocks(page)`), so the page and the
test cannot drift; `tests/test_docs.py` checks that every block is marked and that every `run:` test does so.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from tests.conftest import REPO

FENCE = re.compile(r"(?:^<!--\s*(?P<kind>run|needs):\s*(?P<what>[^>]*?)\s*-->\n)?"
                   r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.M | re.S)
SHELL_LANGS = ("bash", "sh", "shell", "console", "")
# Shell operators that end one command and start the next (`a && b`, `a | b`, `a; b`).
OPERATORS = {"&&", "||", ";", "|", "&"}
NEEDS = ("hub", "gpu", "cluster")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    lang: str
    body: str
    kind: str | None  # "run", "needs" or None (unmarked)
    what: str | None  # the test id, or what the block needs

    def runs(self, test: str) -> bool:
        """Whether the block is marked `<!-- run: TEST -->` for `test`, a test id (`tests/...py::name`) or name."""
        return self.kind == "run" and (self.what == test or self.what.endswith(f"::{test}"))


def blocks(page: str) -> list[Block]:
    """Every fenced block of `page` (a path relative to the repository root), with its marker."""
    text = (REPO / page).read_text()
    return [Block(page, m["lang"], m["body"], m["kind"], m["what"]) for m in FENCE.finditer(text)]


def pages() -> list[str]:
    """README.md and every page under docs/."""
    return ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]


def invocations(body: str, program: str = "vit-pipeline") -> list[list[str]]:
    """The arguments of every `program` command in a shell block's `body`, split as the shell would: comments,
    line continuations and `&&` / `;` / `|` chains handled. For vit-pipeline, `python -m vit_pipeline ARGS` and
    launchers (`accelerate launch ... -m vit_pipeline ARGS`, `torchrun ... -m vit_pipeline ARGS`) count too."""
    found = []
    for line in body.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for word in [*lexer, ";"]:
            if word not in OPERATORS:
                command.append(word)
                continue
            if command and command[0] == program:
                found.append(command[1:])
            elif program == "vit-pipeline" and "-m" in command[:-1] and \
                    command[command.index("-m") + 1] == "vit_pipeline":
                found.append(command[command.index("-m") + 2:])
            command = []
    return found


def commands(page: str, test: str, program: str = "vit-pipeline") -> list[list[str]]:
    """The `program` command lines (arguments after the program) of the blocks of `page` marked
    `<!-- run: TEST -->`, where `test` is the test's id (`tests/...py::name`) or its name."""
    found = [words for block in blocks(page) if block.runs(test) for words in invocations(block.body, program)]
    assert found, f"{page} has no {program} command marked <!-- run: {test} -->"
    return found


def block(page: str, test: str, lang: str | None = None) -> Block:
    """The one block of `page` marked `<!-- run: TEST -->` (of language `lang`, when given)."""
    found = [b for b in blocks(page) if b.runs(test) and (lang is None or b.lang == lang)]
    assert len(found) == 1, f"{page} has {len(found)} {lang or ''} blocks marked <!-- run: {test} -->, not one"
    return found[0]
