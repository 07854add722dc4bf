"""Write docs/options.md from the argument dataclasses' `help` metadata (and the two argparse commands' help), so the
options page cannot drift from the code: `python docs/gen_options.py` after changing a field; `tests/test_docs.py`
fails while the committed page differs from what this gives.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "options.md"
PACKAGE = PAGE.parents[1] / "pipeline"
TRAINER_DOCS = "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"

HEADER = """# Options

Generated from the code by `docs/gen_options.py` (do not edit by hand): each table is a dataclass of
`pipeline/config/` or of a command, each row a field with its `help`. `vit-pipeline COMMAND --help` prints the same
help.

Every train option is a recipe key and a command-line flag of the same name (`learning_rate: 2.0e-5` in a recipe,
`--learning_rate 2.0e-5` on the command line); flags win over the recipe, and an unknown key or flag is an error
that names it. Booleans take `true` / `false`; lists take several values after one flag (`--label_columns a b c`) or
a YAML list.
"""


def cell(text: object) -> str:
    """`text` as one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def shown_default(field: dataclasses.Field) -> str:
    """The field's default as a recipe would write it (blank when there is none)."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, (str, Path)) and Path(value).is_absolute():
        # A file shipped with the package: shown from the source folder, the same on every checkout.
        value = Path(value).resolve().relative_to(PACKAGE.parent).as_posix()
    elif isinstance(value, (list, tuple)):
        value = " ".join(map(str, value))
    return f"`{cell(value)}`"


def shown_type(dataclass: type, field: dataclasses.Field) -> str:
    """The field's annotation as written in its class (HfArgumentParser replaces `field.type` once it has run)."""
    annotation = next(c.__dict__["__annotations__"][field.name] for c in dataclass.__mro__
                      if field.name in c.__dict__.get("__annotations__", {}))
    name = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    name = name.replace("Optional[", "").replace(" | None", "").replace("None | ", "")
    if name.startswith("Literal["):
        return " / ".join(f"`{choice.strip()}`" for choice in name[len("Literal["):-1].replace("'", "").split(","))
    return f"`{cell(name.replace(' | ', ' or '))}`"


def field_table(dataclass: type, fields: list[dataclasses.Field]) -> list[str]:
    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for field in fields:
        rows.append(f"| `--{field.name}` | {shown_type(dataclass, field)} | {shown_default(field)} | "
                    f"{cell(field.metadata.get('help', ''))} |")
    return rows


def dataclass_section(title: str, dataclass: type, intro: str, fields: list | None = None) -> list[str]:
    doc = (dataclass.__doc__ or "").strip().splitlines()[0]
    fields = [f for f in dataclasses.fields(dataclass) if f.init] if fields is None else fields
    return [f"### {title}", "", f"{intro}{doc}", "", *field_table(dataclass, fields), ""]


def parser_section(title: str, parser: argparse.ArgumentParser, intro: str) -> list[str]:
    rows = [f"## {title}", "", intro, "", "| argument | default | what it does |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = f"`--{action.dest}`" if action.option_strings else f"`{action.dest.upper()}`"
        default = "" if action.default in (None, argparse.SUPPRESS) or not action.option_strings else action.default
        default = f"`{str(default).lower() if isinstance(default, bool) else default}`" if default != "" else ""
        choices = f" ({' / '.join(action.choices)})" if action.choices else ""
        rows.append(f"| {name} | {default} | {cell((action.help or '') + choices)} |")
    return [*rows, ""]


def generate() -> str:
    """The options page, from the dataclasses and parsers the commands use."""
    from vit_pipeline.commands.benchmark import Options as BenchmarkOptions
    from vit_pipeline.commands.demo import demo_parser
    from vit_pipeline.commands.push import push_parser
    from vit_pipeline.config.arguments import DataArguments, ModelArguments
    from vit_pipeline.config.commands import EvaluateArguments, ExplainArguments, ExportArguments, PredictArguments
    from vit_pipeline.config.training_args import PipelineTrainingArguments

    own = set(PipelineTrainingArguments.__dict__.get("__annotations__", {}))
    training = [f for f in dataclasses.fields(PipelineTrainingArguments) if f.init]
    inherited = sorted(f.name for f in training if f.name not in own)
    lines = [HEADER, "## train", "",
             "`vit-pipeline train RECIPE.yaml [--field value ...]`, and the recipe keys of every command that trains "
             "(compare, search, benchmark).", ""]
    lines += dataclass_section("ModelArguments", ModelArguments, "")
    lines += dataclass_section("DataArguments", DataArguments, "")
    lines += dataclass_section(
        "PipelineTrainingArguments", PipelineTrainingArguments,
        "A subclass of `transformers.TrainingArguments`: the fields the pipeline adds or whose default it changes. ",
        [f for f in training if f.name in own])
    lines += ["Every other `TrainingArguments` field works under its usual name, with the Trainer's default "
              f"([their help]({TRAINER_DOCS})): " + ", ".join(f"`{name}`" for name in inherited) + ".", ""]
    for title, dataclass, intro in (
            ("evaluate", EvaluateArguments, "Also every [DataArguments](#dataarguments) option: the data to score. "),
            ("predict", PredictArguments, ""), ("export", ExportArguments, ""), ("explain", ExplainArguments, ""),
            ("benchmark", BenchmarkOptions, "Every other flag is a recipe key, applied to both configurations. ")):
        section = dataclass_section(title, dataclass, intro)
        lines += ["## " + section[0].removeprefix("### "), *section[1:]]
    lines += parser_section("push", push_parser(), "`vit-pipeline push OUTPUT_DIR [--hub_model_id ORG/NAME ...]`.")
    lines += parser_section("demo", demo_parser(), "`vit-pipeline demo MODEL [--port P ...]`.")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    PAGE.write_text(generate())
    print(f"wrote {PAGE}", file=sys.stderr)
