"""Options of the commands that use a trained model: evaluate, predict, export, explain.

Each command takes positional arguments (the model, then images for predict and explain) and `--field value` flags
parsed into these dataclasses by `CommandParser`; evaluate and export also take the train command's data options
(`DataArguments`). Errors are one `PipelineError` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import HfArgumentParser

from vit_pipeline import PipelineError
from vit_pipeline.utils import OneLineErrors

PREDICTION_FORMATS = (".csv", ".jsonl", ".parquet")


@dataclass
class EvaluateArguments:
    """`vit-pipeline evaluate MODEL --output_dir R [data options]`."""

    output_dir: str = field(default=None, metadata={"help": "Folder for eval_report.json/.md, predictions.csv, PNGs."})
    batch_size: int = field(
        default=32, metadata={"help": "Images per forward pass (MODEL a training run: its per_device_eval_batch_size)."}
    )
    seed: int = field(
        default=42,
        metadata={"help": "Seeds the held-out split (as in training) and the bootstrap (MODEL a training run: its "
                  "seed)."},
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})
    allow_train_overlap: bool = field(
        default=False,
        metadata={"help": "Evaluate even when some images are among the training rows of MODEL (a training run): the "
                  "report then says how many (train_overlap). Without it such a split is refused."},
    )

    def __post_init__(self):
        if not self.output_dir:
            raise PipelineError("evaluate needs --output_dir: the folder for the report")
        if self.batch_size < 1:
            raise PipelineError(f"batch_size must be at least 1 (got {self.batch_size})")


@dataclass
class PredictArguments:
    """`vit-pipeline predict MODEL INPUT... --output F`."""

    output: str = field(default=None, metadata={"help": "Predictions file: .csv, .jsonl or .parquet."})
    top_k: int = field(default=5, metadata={"help": "Labels and scores listed per image (at most the classes)."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    threshold: float | None = field(
        default=None,
        metadata={"help": "Scores below this are left out of `labels`/`scores`, and `label` is empty when even the "
                  "best is below it (default 0: keep all). Multi-label models: every label at or above it is "
                  "written; default: the per-class thresholds saved with the model (thresholds.json), else 0.5."},
    )
    bad_images: Literal["skip", "error"] = field(
        default="skip", metadata={"help": "Unreadable files: skip and count them, or stop with an error."}
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})

    def __post_init__(self):
        if not self.output:
            raise PipelineError("predict needs --output F (F ends in .csv, .jsonl or .parquet)")
        if not self.output.endswith(PREDICTION_FORMATS):
            raise PipelineError(f"--output {self.output}: the file must end in {', '.join(PREDICTION_FORMATS)}")
        if self.top_k < 1:
            raise PipelineError(f"top_k must be at least 1 (got {self.top_k})")
        if self.batch_size < 1:
            raise PipelineError(f"batch_size must be at least 1 (got {self.batch_size})")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise PipelineError(f"threshold is a score in [0, 1] (got {self.threshold})")


@dataclass
class ExportArguments:
    """`vit-pipeline export MODEL --output_dir E [--format onnx] [--quantize dynamic] [--opset N]`."""

    output_dir: str = field(default=None, metadata={"help": "Folder for model.onnx, configs and export_report.json."})
    format: Literal["onnx"] = field(default="onnx", metadata={"help": "Export format (onnx)."})
    quantize: Literal["none", "dynamic"] = field(
        default="none", metadata={"help": "dynamic: also write model_quantized.onnx (int8 weights, ONNX Runtime)."}
    )
    opset: int = field(default=17, metadata={"help": "ONNX opset version."})
    parity_samples: int = field(default=64, metadata={"help": "Real images the parity check runs on."})
    atol: float = field(
        default=1e-3, metadata={"help": "Largest absolute logit difference ONNX vs PyTorch (fp32) that passes."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Parity images: a dataset (default: the data of MODEL/recipe.yaml)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    eval_split: str | None = field(default=None, metadata={"help": "Split of the parity images (default: found)."})
    validation_dir: str | None = field(default=None, metadata={"help": "Parity images: a labelled image folder."})
    batch_size: int = field(default=16, metadata={"help": "Images per batch in the parity check."})
    seed: int = field(default=42, metadata={"help": "Seeds the held-out split the parity images come from."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})

    def __post_init__(self):
        if not self.output_dir:
            raise PipelineError("export needs --output_dir: the folder for the exported model")
        if not 7 <= self.opset <= 25:
            raise PipelineError(f"opset must be between 7 and 25 (got {self.opset})")
        if self.parity_samples < 1:
            raise PipelineError(f"parity_samples must be at least 1 (got {self.parity_samples})")
        if self.atol <= 0:
            raise PipelineError(f"atol must be positive (got {self.atol})")
        if self.batch_size < 1:
            raise PipelineError(f"batch_size must be at least 1 (got {self.batch_size})")


@dataclass
class ExplainArguments:
    """`vit-pipeline explain MODEL IMAGE... --output_dir X`."""

    output_dir: str = field(default=None, metadata={"help": "Folder for one rollout PNG per image."})
    head_fusion: Literal["mean", "max", "min"] = field(
        default="mean", metadata={"help": "How each layer's heads are combined."}
    )
    discard_ratio: float = field(
        default=0.9, metadata={"help": "Share of the weakest attention links dropped per layer, in [0, 1)."}
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})

    def __post_init__(self):
        if not self.output_dir:
            raise PipelineError("explain needs --output_dir: the folder for the maps")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise PipelineError(f"discard_ratio must be in [0, 1) (got {self.discard_ratio})")


class CommandParser(OneLineErrors, HfArgumentParser):
    """`HfArgumentParser` for a command with positional arguments: flags into dataclasses, positionals returned.

    Errors raise `PipelineError` with one line, instead of argparse's usage dump and exit.
    """

    def __init__(self, dataclasses, prog: str, positionals: str):
        super().__init__(dataclasses, prog=prog, usage=f"{prog} {positionals} [--field value ...]")

    def parse_command(self, argv: list[str]) -> tuple[list[str], tuple]:
        """Parse `argv`; returns (positional arguments, the dataclasses).

        Raises:
            PipelineError: an unknown option, a wrong value or a failed check, in one line.
        """
        try:
            *parsed, remaining = self.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
        except (ValueError, TypeError) as err:
            raise PipelineError(" ".join(str(err).split())) from err
        unknown = [arg for arg in remaining if arg.startswith("-")]
        if unknown:
            raise PipelineError(f"unknown option {unknown[0]} (see `{self.prog} --help`)")
        return remaining, tuple(parsed)
