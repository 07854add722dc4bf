"""Options of the commands that use a trained model: evaluate, predict, export, explain, audit.

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


# explain's methods (`evaluation.cam.METHODS`, which must not import the config: the Space copies it), checked
# before the model loads.
EXPLAIN_METHODS = ("rollout", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "eigengradcam",
                   "scorecam")


@dataclass
class ExplainArguments:
    """`vit-pipeline explain MODEL [IMAGE...] --output_dir X [--method M] [--faithfulness true]`."""

    output_dir: str = field(default=None, metadata={"help": "Folder for one PNG per image and explain_report.json."})
    method: str | None = field(
        default=None, metadata={"help": "rollout, gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam, "
                                        "eigengradcam or scorecam (default: rollout for ViTs, gradcam for the rest; "
                                        "all but rollout need the explain extra)."}
    )
    target: str | None = field(
        default=None, metadata={"help": "Label whose map is drawn (default: each image's predicted label)."}
    )
    faithfulness: bool = field(
        default=False, metadata={"help": "Score each map: deletion and insertion AUC, beside a random map's."}
    )
    max_samples: int = field(
        default=16, metadata={"help": "Eval images explained when the images come from --dataset_name (or "
                                      "--validation_dir)."}
    )
    seed: int = field(default=42, metadata={"help": "Seeds the held-out split (as in training) and the random maps."})
    head_fusion: Literal["mean", "max", "min"] = field(
        default="mean", metadata={"help": "rollout: how each layer's heads are combined."}
    )
    discard_ratio: float = field(
        default=0.9, metadata={"help": "rollout: share of the weakest attention links dropped per layer, in [0, 1)."}
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})

    def __post_init__(self):
        if not self.output_dir:
            raise PipelineError("explain needs --output_dir: the folder for the maps")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise PipelineError(f"discard_ratio must be in [0, 1) (got {self.discard_ratio})")
        if self.method is not None and self.method not in EXPLAIN_METHODS:
            raise PipelineError(f"unknown --method {self.method}: use one of {', '.join(EXPLAIN_METHODS)}")
        if self.max_samples < 1:
            raise PipelineError(f"max_samples must be at least 1 (got {self.max_samples})")


# The audit's issues: cleanvision's image property checks (its duplicate checks are the audit's own: exact by pixel
# digest, near by embedding), and those whose images exclude.txt lists by default (outliers, blurry, odd size and
# grayscale images are reported only: they may be rare but right).
IMAGE_ISSUES = ("dark", "light", "blurry", "low_information", "odd_size", "odd_aspect_ratio", "grayscale")
AUDIT_ISSUES = ("label", "exact_duplicate", "near_duplicate", "outlier", *IMAGE_ISSUES)
AUDIT_EXCLUDE = ("label", "exact_duplicate", "near_duplicate", "dark", "light", "low_information")


@dataclass
class AuditArguments:
    """`vit-pipeline audit [RECIPE] --output_dir A [--model MODEL] [data options]`."""

    output_dir: str = field(default=None, metadata={"help": "Folder for audit_report.json/.md, issues.csv, "
                                                    "exclude.txt and the image grids."})
    model: str | None = field(
        default=None, metadata={"help": "Model that embeds the images: a training output folder or a Hub id "
                                "(default: the recipe's model_name_or_path). A model trained on this data is best."}
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass of the embedding."})
    seed: int = field(default=42, metadata={"help": "Seeds the held-out split (as in training; default: the "
                                             "recipe's seed) and the cross-validation."})
    n_neighbors: int = field(default=10, metadata={"help": "Nearest neighbours per image (label issues, near "
                                                  "duplicates, outliers)."})
    near_duplicate_similarity: float | None = field(
        default=None, metadata={"help": "Cosine similarity of two (centred) embeddings from which their images are "
                                "near duplicates (re-encoded, resized, lightly edited copies), in (0, 1]. Default: "
                                "cleanlab's rule, a distance under 0.13 x the median distance of every image to its "
                                "nearest neighbour (the report gives the similarity it came to)."}
    )
    label_method: Literal["knn", "cross_validation"] = field(
        default="knn", metadata={"help": "Out-of-sample class probabilities for the label-issue search: the "
                                 "neighbours' labels (knn: costs nothing more), or a logistic regression on the "
                                 "embeddings, 5-fold cross-validated."}
    )
    image_issues: bool = field(default=True, metadata={"help": "Run cleanvision's image checks (dark, light, "
                                                      "blurry, low information, odd size or aspect, grayscale)."})
    exclude_issues: list[str] = field(
        default_factory=lambda: list(AUDIT_EXCLUDE),
        metadata={"help": "Issues whose images exclude.txt lists (each duplicate group keeps one image, a train "
                  "one when it has one): label, exact_duplicate, near_duplicate, outlier, dark, light, blurry, "
                  "low_information, odd_size, odd_aspect_ratio, grayscale."},
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})

    def __post_init__(self):
        if not self.output_dir:
            raise PipelineError("audit needs --output_dir: the folder for the report")
        if self.batch_size < 1:
            raise PipelineError(f"batch_size must be at least 1 (got {self.batch_size})")
        if self.n_neighbors < 1:
            raise PipelineError(f"n_neighbors must be at least 1 (got {self.n_neighbors})")
        if self.near_duplicate_similarity is not None and not 0.0 < self.near_duplicate_similarity <= 1.0:
            raise PipelineError(f"near_duplicate_similarity is a cosine similarity in (0, 1] "
                                f"(got {self.near_duplicate_similarity})")
        unknown = [name for name in self.exclude_issues if name not in AUDIT_ISSUES]
        if unknown:
            raise PipelineError(f"exclude_issues: unknown issue '{unknown[0]}' (use {', '.join(AUDIT_ISSUES)})")


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
