"""The strict recipe parser: a YAML recipe in, command-line flags override it, unknown keys are errors.

A recipe is a flat YAML file whose keys are the fields of the three argument dataclasses (and every
`transformers.TrainingArguments` field). Unknown keys, wrong types and contradicting options raise a
`PipelineError` with one line, before any data or weights are loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from vit_pipeline import PipelineError
from vit_pipeline.config.arguments import DATACLASSES, DataArguments, ModelArguments
from vit_pipeline.config.training_args import PipelineTrainingArguments
from vit_pipeline.utils import OneLineErrors, one_line


class RecipeParser(OneLineErrors, HfArgumentParser):
    """An `HfArgumentParser` that takes a YAML recipe, lets flags override it, and rejects unknown keys.

    Errors raise `PipelineError` with one line naming the key, instead of argparse's usage dump and exit.
    """

    def __init__(self, prog: str = "vit-pipeline train"):
        super().__init__(DATACLASSES, prog=prog, description=__doc__.splitlines()[0])
        for action in self._actions:
            if action.dest in ("bf16", "fp16", "tf32"):
                # Optional booleans (unset = automatic) still take a bare `--bf16`, as with the Trainer's scripts.
                action.nargs, action.const = "?", True

    def known_fields(self) -> dict[str, dataclasses.Field]:
        """All recipe keys this parser accepts, with their dataclass fields."""
        return {f.name: f for dc in DATACLASSES for f in dataclasses.fields(dc) if f.init}

    def parse(self, argv: list[str]) -> tuple[ModelArguments, DataArguments, PipelineTrainingArguments, str | None]:
        """Parse `[RECIPE.yaml | --config RECIPE.yaml] [--field value ...]` into the three dataclasses.

        Returns:
            The model, data and training arguments, and the recipe path (None when there is none).

        Raises:
            PipelineError: unknown key, wrong type or contradicting options, with one line that says what to fix.
        """
        recipe_path, flags = _split_recipe_path(argv)
        recipe_argv: list[str] = []
        if recipe_path is not None:
            recipe_argv = self._recipe_to_argv(recipe_path)
        # Flags come after the recipe's values, and argparse keeps the last value it sees.
        args = recipe_argv + flags
        self._check_unknown_flags(flags)
        try:
            model_args, data_args, training_args, remaining = self.parse_args_into_dataclasses(
                args=args, return_remaining_strings=True
            )
        except (ValueError, TypeError) as err:
            # __post_init__ checks of TrainingArguments raise ValueError with a full sentence.
            raise PipelineError(one_line(err)) from err
        if remaining:
            raise PipelineError(one_line(f"unexpected argument(s) {' '.join(map(repr, remaining))} "
                                         f"(see `{self.prog} --help`)"))
        check_combination(model_args, data_args, training_args)
        return model_args, data_args, training_args, recipe_path

    def _recipe_to_argv(self, path: str) -> list[str]:
        argv: list[str] = []
        for key, value in self.read_recipe(path).items():
            if value is None or isinstance(value, dict):
                # Mappings (fsdp_config, lr_scheduler_kwargs, ...) and nulls go straight to the dataclass.
                self.set_defaults(**{key: value})
            else:
                argv += values_to_argv({key: value})
        return argv

    def read_recipe(self, path: str) -> dict[str, Any]:
        """The recipe at `path` as a mapping, every key checked against the fields this parser knows.

        Raises:
            PipelineError: unreadable file, invalid YAML, not a mapping, or an unknown key (with a suggestion).
        """
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise PipelineError(f"cannot read recipe {path}: {err.strerror}") from err
        try:
            recipe = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise PipelineError(f"recipe {path} is not valid YAML: {one_line(err)}") from err
        if not isinstance(recipe, dict):
            raise PipelineError(f"recipe {path} must be a mapping of field: value, got {type(recipe).__name__}")
        known = self.known_fields()
        for key in recipe:
            if key not in known:
                shown = f"'{key}'" if isinstance(key, str) and key.isprintable() else repr(key)
                raise PipelineError(f"unknown key {shown} in {path}{_suggest(str(key), known, self.prog)}")
        return recipe

    def _check_unknown_flags(self, flags: list[str]) -> None:
        known = self.known_fields()
        for flag in flags:
            if flag.startswith("--"):
                key = flag[2:].split("=", 1)[0].replace("-", "_")
                if key not in known and key != "help":
                    shown = f"--{key}" if key.isprintable() else repr(flag)
                    raise PipelineError(f"unknown option {shown}{_suggest(key, known, self.prog)}")


def values_to_argv(values: dict[str, Any]) -> list[str]:
    """Recipe values (scalars and lists; not None or mappings) as the flags that set them."""
    argv: list[str] = []
    for key, value in values.items():
        if isinstance(value, list):
            argv += [f"--{key}", *(_scalar(v) for v in value)] if value else []
        else:
            argv.append(f"--{key}={_scalar(value)}")
    return argv


def check_combination(model_args, data_args, training_args) -> None:
    """Reject options of different groups that contradict each other, before any data or weights are loaded."""
    if model_args.freeze_backbone and (training_args.layer_decay is not None
                                       or training_args.backbone_learning_rate is not None):
        raise PipelineError("freeze_backbone leaves nothing for layer_decay / backbone_learning_rate to act on: "
                            "drop one of them")
    if data_args.streaming and training_args.class_weighted_loss:
        raise PipelineError("class_weighted_loss counts every training label, which a stream does not have up front: "
                            "set class_weighted_loss: false or streaming: false")
    if model_args.use_peft and training_args.ema_decay:
        raise PipelineError("ema_decay is not supported with use_peft (the adapters are small and merged at the "
                            "end): set ema_decay: 0")


def _split_recipe_path(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take the recipe path out of argv: a first positional `*.yaml` or `--config PATH`."""
    argv = list(argv)
    path = None
    for i, arg in enumerate(argv):
        if arg == "--config" or arg.startswith("--config="):
            if arg == "--config":
                if i + 1 >= len(argv):
                    raise PipelineError("--config needs a path to a YAML recipe")
                path = argv[i + 1]
                del argv[i : i + 2]
            else:
                path = arg.split("=", 1)[1]
                del argv[i]
            break
    if argv and not argv[0].startswith("-"):
        if path is not None:
            raise PipelineError(f"two recipes given ({path} and {argv[0]}): pass one")
        path = argv.pop(0)
    if path is not None and not path.endswith((".yaml", ".yml")):
        raise PipelineError(f"the recipe must be a .yaml file, got '{path}'")
    return path, argv


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _suggest(key: str, known: dict, prog: str = "vit-pipeline train") -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f": did you mean '{close[0]}'?" if close else f": remove it (see `{prog} --help` for the keys)"
