"""The documentation (README.md and docs/) against the code: every block marked, every `run:` test real and reading
its page, every `vit-pipeline` command line accepted by the command's own parser, the options page generated from
the dataclasses, the README's links resolving (`mkdocs build --strict` checks the site's own links in CI)."""

from __future__ import annotations

import ast
import importlib.util
import re

import pytest
import yaml

from tests.conftest import REPO
from tests.docs_blocks import NEEDS, SHELL_LANGS, block, blocks, invocations, pages

PAGES = pages()
READERS = ("commands", "blocks", "block")


def test_the_pages_are_the_nav():
    """Every page is in the site's nav, and the nav names no page that is missing (mkdocs warns only)."""
    nav = re.findall(r":\s*([\w/.-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), flags=re.M)
    assert sorted(nav) == sorted(p.removeprefix("docs/") for p in PAGES if p != "README.md")


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_marked(page):
    for found in blocks(page):
        assert found.kind in ("run", "needs"), f"{page}: a block has no <!-- run: ... --> / <!-- needs: ... -->:\n" \
                                               f"{found.body[:200]}"
        if found.kind == "needs":
            assert found.what in NEEDS, f"{page}: <!-- needs: {found.what} --> is not one of {', '.join(NEEDS)}"


def _constants(tree: ast.Module) -> dict[str, set[str]]:
    """Module-level names bound to strings (or tuples / lists of them)."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            strings = {c.value for c in ast.walk(node.value)
                       if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = strings
    return found


def _reads(function: ast.AST, page: str, constants: dict[str, set[str]]) -> bool:
    """Whether `function` calls commands() / blocks() / block() on `page`: a literal, a module constant, or a
    variable over strings the function (or the module constants it names) holds."""
    names = {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}
    reachable = {c.value for c in ast.walk(function) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    reachable |= {s for name in names & constants.keys() for s in constants[name]}
    for call in ast.walk(function):
        if not isinstance(call, ast.Call) or not call.args:
            continue
        name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
        if name in READERS and page in reachable:
            return True
    return False


def run_markers():
    return [pytest.param(b.page, b.what, id=f"{b.page}:{b.what}") for page in PAGES for b in blocks(page)
            if b.kind == "run"]


@pytest.mark.parametrize("page, test", sorted(set(run_markers()), key=str))
def test_every_run_marker_names_a_test_that_reads_the_page(page, test):
    path, _, name = test.partition("::")
    assert name and path.startswith("tests/") and (REPO / path).is_file(), \
        f"{page}: <!-- run: {test} --> must name tests/<file>.py::<test function>, an existing file"
    tree = ast.parse((REPO / path).read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert name in functions, f"{page}: <!-- run: {test} -->: {path} has no test {name}"
    constants = _constants(tree)
    function = functions[name]
    # The test itself, or a fixture of the same module it takes, reads the page.
    fixtures = [functions[a.arg] for a in function.args.args if a.arg in functions]
    # ... or a helper of the same module it calls (one that reads the page's commands for it).
    called = {c.func.id for c in ast.walk(function) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    fixtures += [functions[n] for n in sorted(called) if n in functions and n != name]
    assert any(_reads(f, page, constants) for f in [function, *fixtures]), \
        f"{test} does not read {page} (commands({page!r}, ...) or blocks({page!r})): it cannot be running its block"


# ---- every command line parses through the command's own parser ------------------------------------------------

def _parse_train(argv, prog="vit-pipeline train"):
    from vit_pipeline.config import RecipeParser

    recipe = next((a for a in argv if a.endswith((".yaml", ".yml")) and not a.startswith("-")), None)
    if recipe is not None and not (REPO / recipe).is_file():
        # A recipe an earlier command writes (search's best_recipe.yaml): its flags still have to be known options.
        argv = [a for a in argv if a not in (recipe, "--config")]
        argv += ["--model_name_or_path", "m", "--dataset_name", "d"]
    return RecipeParser(prog=prog).parse(_existing_exclude(argv))


def _existing_exclude(argv):
    # An exclude file the page's `audit` command writes first: any file stands in for it (its flag must still parse).
    if "--exclude_images" in argv:
        i = argv.index("--exclude_images") + 1
        if i < len(argv) and not (REPO / argv[i]).is_file():
            argv = [*argv[:i], __file__, *argv[i + 1:]]
    return argv


def _parse_audit(argv):
    from vit_pipeline.commands.audit import PROG, recipe_arguments
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.config.commands import AuditArguments, CommandParser

    flags, _ = recipe_arguments(_existing_exclude(argv))
    positionals, _ = CommandParser((AuditArguments, DataArguments), PROG, "RECIPE").parse_command(flags)
    assert not positionals, positionals


def _parse_compare(argv):
    from vit_pipeline.commands.compare import _plan_runs

    _, runs = _plan_runs(argv)
    return [_parse_train(run_argv, "vit-pipeline compare") for *_, run_argv in runs]


def _parse_search(argv):
    from vit_pipeline.commands.search import _parse_search_options

    options, shared = _parse_search_options(argv)
    return _parse_train([*shared, "--output_dir", str(options["output_dir"])], "vit-pipeline search")


def _parse_benchmark(argv):
    from vit_pipeline.commands.benchmark import parse_options

    _, rest = parse_options(argv)
    return _parse_train(rest, "vit-pipeline benchmark")


def _model_command(name: str, dataclasses: str, least: int, most: int | None):
    def parse(argv):
        from vit_pipeline.config import commands as options
        from vit_pipeline.config.arguments import DataArguments
        from vit_pipeline.config.commands import CommandParser

        classes = tuple(DataArguments if c == "DataArguments" else getattr(options, c) for c in dataclasses.split())
        parser = CommandParser(classes, f"vit-pipeline {name}", "MODEL ...")
        positionals, _ = parser.parse_command(argv)
        assert least <= len(positionals) <= (most or len(positionals)), f"{name}: positionals {positionals}"
    return parse


def _parse_evaluate(argv):
    """evaluate's own parsing. `evaluate outputs/NAME` with no data option reads the run's recipe.yaml: a docs line
    about a run the page's train line makes (`recipes/NAME.yaml`) parses against a stand-in run holding that recipe."""
    import tempfile
    from pathlib import Path

    from vit_pipeline.commands.evaluate import parse_arguments

    model = next((a for a in argv if not a.startswith("-")), "")
    recipe = REPO / "recipes" / f"{Path(model).name}.yaml"
    if model.startswith("outputs/") and not (REPO / model / "recipe.yaml").is_file() and recipe.is_file():
        with tempfile.TemporaryDirectory() as run:
            (Path(run) / "recipe.yaml").write_text(recipe.read_text())
            _, positionals, *_ = parse_arguments([run if a == model else a for a in argv])
    else:
        _, positionals, *_ = parse_arguments(argv)
    assert len(positionals) == 1, f"evaluate: positionals {positionals}"


def _explain(argv):
    # explain takes evaluate's data options too (`--dataset_name ... --max_samples N`): its own parser splits them.
    from vit_pipeline.commands.explain import parse_arguments

    return parse_arguments(argv)


def _argparse_command(factory: str):
    def parse(argv):
        module, _, function = factory.rpartition(".")
        return getattr(importlib.import_module(module), function)().parse_args(argv)
    return parse


# Each command's own parsing, without running it. A new command adds its line here (tests/test_docs.py).
PARSERS = {
    "train": _parse_train,
    "compare": _parse_compare,
    "audit": _parse_audit,
    "search": _parse_search,
    "benchmark": _parse_benchmark,
    "evaluate": _parse_evaluate,
    "predict": _model_command("predict", "PredictArguments", 2, None),
    "export": _model_command("export", "ExportArguments", 1, 1),
    "explain": _explain,
    "push": _argparse_command("vit_pipeline.commands.push.push_parser"),
    "demo": _argparse_command("vit_pipeline.commands.demo.demo_parser"),
}


def command_lines():
    return [pytest.param(argv, id=f"{b.page}:{' '.join(argv)[:60]}") for page in PAGES for b in blocks(page)
            if b.lang in SHELL_LANGS for argv in invocations(b.body)]


@pytest.mark.parametrize("argv", command_lines())
def test_every_command_line_parses(argv, monkeypatch):
    """Each `vit-pipeline COMMAND ...` of the docs through that command's real parser (a recipe the line names, read
    from the repository): an unknown flag, a wrong value or a missing argument in the docs fails here."""
    from vit_pipeline.cli import COMMANDS

    monkeypatch.chdir(REPO)
    assert argv and argv[0] in COMMANDS, f"`vit-pipeline {' '.join(argv)}`: no such command"
    if any(a in ("-h", "--help") for a in argv):
        return
    assert argv[0] in PARSERS, f"add the parser of `vit-pipeline {argv[0]}` to PARSERS in tests/test_docs.py"
    PARSERS[argv[0]](argv[1:])


def test_the_parse_check_refuses_an_unknown_flag():
    from vit_pipeline import PipelineError

    for argv in (["train", "recipes/quickstart.yaml", "--learnig_rate", "1e-3"],
                 ["evaluate", "outputs/x", "--dataset_name", "d", "--output_dir", "r", "--top_k", "3"],
                 ["compare", "recipes/quickstart.yaml", "--output_dir", "c", "--models", "a:learnig_rate=1"]):
        with pytest.raises(PipelineError, match="unknown"):
            PARSERS[argv[0]](argv[1:])


# ---- generated and checked content ------------------------------------------------------------------------------

def test_options_page_is_generated_from_the_dataclasses():
    spec = importlib.util.spec_from_file_location("gen_options", REPO / "docs" / "gen_options.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    page = generator.generate()
    assert (REPO / "docs" / "options.md").read_text() == page, \
        "docs/options.md differs from the code's options: run `python docs/gen_options.py` and commit it"
    from vit_pipeline.config import RecipeParser

    # Every recipe key is on the page: the pipeline's own with their help, the Trainer's others by name.
    for name in RecipeParser().known_fields():
        assert f"`--{name}`" in page or f"`{name}`" in page.split("Every other `TrainingArguments` field")[1], name
    assert "Fine-tune at this resolution (pixels per side)" in page
    assert "| `--hub_strategy` |" in page.split("## push")[1]


def test_recipe_excerpts_are_the_shipped_recipes():
    excerpt = block("docs/recipes.md", "test_recipe_excerpts_are_the_shipped_recipes", "yaml").body
    command = excerpt.splitlines()[0].lstrip("# ").split()
    assert command[:2] == ["vit-pipeline", "train"]
    recipe = yaml.safe_load((REPO / command[2]).read_text())
    for key, value in yaml.safe_load(excerpt).items():
        assert recipe[key] == value, f"docs/recipes.md shows {key}: {value}, {command[2]} has {recipe.get(key)}"


def test_the_search_space_example_is_a_valid_space(tmp_path):
    from vit_pipeline.commands.search import read_space
    from vit_pipeline.config import RecipeParser

    path = tmp_path / "space.yaml"
    path.write_text(block("docs/commands/search.md", "test_the_search_space_example_is_a_valid_space", "yaml").body)
    space = read_space(str(path), set(RecipeParser().known_fields()), "vit")
    assert space == yaml.safe_load(path.read_text())


def test_the_layout_names_every_package():
    tree = block("docs/contributing.md", "test_the_layout_names_every_package", "text").body
    named = set(re.findall(r"([\w.]+/)", tree))
    for package in sorted((REPO / "pipeline").rglob("__init__.py")):
        folder = package.parent
        if folder != REPO / "pipeline":
            assert f"{folder.name}/" in named, f"docs/contributing.md's layout does not name pipeline's {folder.name}/"
    for line in tree.splitlines():
        top = re.match(r"([\w.]+)/\s", line)
        if top:
            assert (REPO / top[1]).is_dir(), f"docs/contributing.md's layout names {top[1]}/, which does not exist"
    for module in (REPO / "pipeline").glob("*.py"):
        if module.name != "__init__.py":
            assert module.name in tree, module.name


@pytest.mark.parametrize("page", ["README.md", "recipes/README.md"])
def test_the_readme_links_resolve(page):
    """README.md is outside the site (mkdocs checks the docs' own links): its links name files that exist."""
    text = (REPO / page).read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link) or link.startswith("#"):
            continue
        target = ((REPO / page).parent / link.split("#")[0]).resolve()
        assert target.exists(), f"{page} links to {link}, which does not exist"


def test_readme_is_a_landing_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 150
