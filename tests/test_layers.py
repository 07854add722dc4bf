"""The layers point one way: each module's imports, read with `ast` (no import runs), against the layering rules.

    data/, model/      import nothing from training/, evaluation/, publish/, commands/
    evaluation/        imports nothing from training/ or commands/
    publish/           imports no torch (nor torchvision) at module level: its top-level statements only
    commands/          only commands/ and cli.py (lazily, inside a function) import vit_pipeline.commands
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
FORBIDDEN = {
    "data": ("training", "evaluation", "publish", "commands"),
    "model": ("training", "evaluation", "publish", "commands"),
    "evaluation": ("training", "commands"),
}
TORCH = ("torch", "torchvision")


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer(path: Path) -> str | None:
    """The layer (sub-package) a module belongs to, or None for the package's top-level modules."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def imported(node: ast.AST, path: Path) -> list[str]:
    """The absolute module names an import statement names (relative imports resolved against `path`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = ["vit_pipeline", *path.relative_to(PACKAGE).with_suffix("").parts][:-node.level]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        # `from vit_pipeline import training` names a module too.
        return [name] + [f"{name}.{alias.name}" for alias in node.names]
    return []


def all_imports(tree: ast.AST, path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, name) for node in ast.walk(tree) for name in imported(node, path)]


def top_level_imports(tree: ast.Module, path: Path) -> list[tuple[int, str]]:
    """Imports that run when the module is imported: top-level statements, including those under `if`/`try` (not
    under `if TYPE_CHECKING:`), never the bodies of functions or classes."""
    found, stack = [], list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found += [(node.lineno, name) for name in imported(node, path)]
        elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body]
        elif isinstance(node, ast.With):
            stack += node.body
    return found


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def where(path: Path, line: int, name: str) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"


def test_the_package_has_the_layers():
    assert {layer(p) for p in modules()} >= {None, "commands", "config", "data", "model", "training", "evaluation",
                                              "publish"}


@pytest.mark.parametrize("lower", sorted(FORBIDDEN))
def test_lower_layers_import_nothing_from_higher_ones(lower):
    bad = [where(p, line, name) for p in modules() if layer(p) == lower for line, name in all_imports(parsed(p), p)
           if any(name == f"vit_pipeline.{upper}" or name.startswith(f"vit_pipeline.{upper}.")
                  for upper in FORBIDDEN[lower])]
    assert not bad, "\n".join(bad)


def test_publish_imports_no_torch_at_module_level():
    bad = [where(p, line, name) for p in modules() if layer(p) == "publish"
           for line, name in top_level_imports(parsed(p), p) if name.split(".")[0] in TORCH]
    assert not bad, "\n".join(bad)


def test_only_commands_import_commands():
    bad = []
    for path in modules():
        if layer(path) == "commands":
            continue
        tree = parsed(path)
        names = top_level_imports(tree, path) if path.name == "cli.py" else all_imports(tree, path)
        bad += [where(path, line, name) for line, name in names
                if name == "vit_pipeline.commands" or name.startswith("vit_pipeline.commands.")]
    assert not bad, "\n".join(bad)


def test_the_checks_see_imports_written_every_way():
    """The reader itself: absolute, relative and lazy imports are all found (so a clean result means something)."""
    path = PACKAGE / "data" / "example.py"  # never written: only its position in the package matters
    tree = ast.parse("import torch\nfrom ..training import loop\n"
                     "def f():\n    from vit_pipeline.publish.card import render_card\n"
                     "if TYPE_CHECKING:\n    import torchvision\n")
    names = [name for _, name in all_imports(tree, path)]
    assert {"torch", "vit_pipeline.training", "vit_pipeline.training.loop", "vit_pipeline.publish.card"} <= set(names)
    assert sorted(name for _, name in top_level_imports(tree, path)) == ["torch", "vit_pipeline.training",
                                                                         "vit_pipeline.training.loop"]


def test_nothing_imports_the_source_folder_by_its_name():
    """The import name is `vit_pipeline`; `pipeline` is only the source folder (mapped by setuptools' package-dir),
    so a module or test that imports `pipeline` works from a checkout and breaks in an installed wheel."""
    tests = sorted((PACKAGE.parent / "tests").rglob("*.py")) + sorted((PACKAGE.parent / "benchmarks").rglob("*.py"))
    bad = [f"{p.relative_to(PACKAGE.parent)}:{line} imports {name}" for p in modules() + tests
           for line, name in all_imports(parsed(p), p if p.is_relative_to(PACKAGE) else PACKAGE / "x.py")
           if name == "pipeline" or name.startswith("pipeline.")]
    assert not bad, "\n".join(bad)
