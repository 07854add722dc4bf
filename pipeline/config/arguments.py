"""The three argument dataclasses: `ModelArguments`, `DataArguments`, `PipelineTrainingArguments`.

Every field is a recipe key and a command-line flag. Single-field range checks and cross-field checks run in
`__post_init__`, before any data or weights are loaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import TrainingArguments

from pipeline import PipelineError
from pipeline.config.checks import (
    check_accelerate_options,
    check_output_dir,
    check_range,
    check_trainer_trackers,
)
from pipeline.config.machine import (  # noqa: F401 - speed_summary / stream_schedule: imported from here too
    _auto_precision,
    _default_workers,
    _has_accelerator,
    speed_summary,
    stream_schedule,
)
from pipeline.utils import plain

RECIPE_FILE = "recipe.yaml"
SINGLE_LABEL, MULTI_LABEL = "single_label_classification", "multi_label_classification"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL)


@dataclass
class ModelArguments:
    """Which checkpoint to fine-tune, and how to load it."""

    model_name_or_path: str = field(
        default=None,
        metadata={"help": "Hub model id (org/name) or local folder of an image classifier or backbone: any "
                  "AutoModelForImageClassification (ViT, DeiT, BEiT, Swin, DINOv2, ConvNeXt, ResNet, EfficientNet)."},
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the checkpoint."})
    from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Build the model from the checkpoint's config with random weights instead of loading them "
            "(the folder then needs only config.json and preprocessor_config.json)."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow code from the checkpoint's repo to run. Off unless you trust it."}
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention kernel: sdpa (fused, fast) or eager."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded checkpoints are cached."})
    # Fine-tuning techniques that change the model itself (pipeline/resolution.py, pipeline/optim.py, pipeline/lora.py).
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Fine-tune at this resolution (pixels per side) instead of the checkpoint's: ViT-style position "
            "embeddings are interpolated once (CNNs and Swin need no change), and the saved model and image processor "
            "use the new size."
        },
    )
    freeze_backbone: bool = field(
        default=False, metadata={"help": "Train only the classification head; the backbone's weights stay as loaded."}
    )
    use_peft: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters (peft) on the attention projections and the classifier fully; the saved "
            "model is merged, so it loads with no peft installed."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha/r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names that get LoRA adapters; default: the family's (ViT, DeiT, BEiT, Swin, DINOv2: "
                  "q_proj v_proj; ConvNeXt: pwconv1 pwconv2). Other ViT modules in transformers 5: k_proj, o_proj, "
                  "fc1, fc2."},
    )
    lora_save_adapter: bool = field(
        default=True, metadata={"help": "Also keep the unmerged adapter in OUTPUT_DIR/adapter (a few MB)."}
    )

    def __post_init__(self):
        if not self.model_name_or_path:
            raise PipelineError("model_name_or_path is not set: name a checkpoint in the recipe or with "
                                "--model_name_or_path")
        if self.image_size is not None and self.image_size < 1:
            raise PipelineError(f"image_size must be a positive number of pixels (got {self.image_size})")
        if self.use_peft and self.freeze_backbone:
            raise PipelineError("use_peft already keeps the backbone frozen (only adapters and the head train): "
                                "set freeze_backbone: false")
        if self.lora_r < 1:
            raise PipelineError(f"lora_r must be at least 1 (got {self.lora_r})")
        check_range(self, "lora_alpha", 0, low_open=True)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise PipelineError(f"lora_dropout must be in [0, 1) (got {self.lora_dropout})")


@dataclass
class DataArguments:
    """Which images to train and evaluate on, and how to augment them."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, local folder laid out like a Hub dataset repo (parquet or imagefolder), a "
            "save_to_disk folder, or builtin:digits (the embedded scikit-learn digits)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration (subset) name."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of the dataset."})
    train_dir: str | None = field(default=None, metadata={"help": "Plain image folder for training (class/img.png)."})
    validation_dir: str | None = field(default=None, metadata={"help": "Plain image folder for validation."})
    image_column_name: str | None = field(
        default=None, metadata={"help": "Image column; found automatically (image, img) when not set."}
    )
    label_column_name: str | None = field(
        default=None, metadata={"help": "Label column; found automatically (label, labels) when not set."}
    )
    label_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "Multi-label from several 0/1 columns, one per class (the CSV layout of CheXpert-like sets): "
            "the column names become the class names. Instead of label_column_name."
        },
    )
    label_flag_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "Multi-label from a label column of 0/1 vectors, one flag per class (MedMNIST's ChestMNIST "
            "layout): the class names, in the vectors' order."
        },
    )
    problem_type: str | None = field(
        default=None,
        metadata={
            "help": "single_label_classification or multi_label_classification; default: found from the data (a "
            "label column of lists, or label_columns, is multi-label). Multi-label trains sigmoid outputs with "
            "binary cross-entropy, and the saved model's pipeline() returns one independent score per label."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split to evaluate on; default: validation, valid, val or test, else a split of train."},
    )
    train_val_split: float = field(
        default=0.15,
        metadata={"help": "Fraction of train held out (stratified, seeded) when the dataset has no eval split."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep at most this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep at most this many eval rows."})
    verify_images: bool = field(
        default=True,
        metadata={
            "help": "Decode every image once before training, so a bad file fails in seconds instead of hours in."
        },
    )
    bad_images: Literal["error", "skip"] = field(
        default="error", metadata={"help": "What to do with unreadable images: stop with an error, or skip them."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for the image check (default: all cores)."}
    )
    random_resized_crop: bool = field(
        default=True, metadata={"help": "Train-time random resized crop; off: a plain resize."}
    )
    crop_scale_min: float = field(
        default=0.08, metadata={"help": "Smallest area fraction the random resized crop keeps."}
    )
    horizontal_flip: bool = field(
        default=True, metadata={"help": "Train-time random horizontal flip (turn off for text, digits, ...)."}
    )
    # Extra train-time augmentation (pipeline/augment.py), all torchvision transforms v2.
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = field(
        default="none", metadata={"help": "Automatic augmentation policy: none, randaugment or trivialaugment."}
    )
    rand_augment_num_ops: int = field(default=2, metadata={"help": "RandAugment: operations applied per image."})
    rand_augment_magnitude: int = field(default=9, metadata={"help": "RandAugment: magnitude of each op (0-30)."})
    random_erasing: float = field(
        default=0.0, metadata={"help": "Probability of erasing a random rectangle of the normalised image (0: off)."}
    )
    fast_transforms: bool = field(
        default=True,
        metadata={
            "help": "Decode and crop each image to the model's size as uint8 in the loader workers, then rescale and "
            "normalize whole batches on the device; false: every step per image, in float, in the workers."
        },
    )
    pixel_cache: bool = field(
        default=False,
        metadata={
            "help": "With fast_transforms: decode every image once before training and keep its uint8 pixels in the "
            "datasets cache (training images at 8/7 of the model's size, eval images as the exact model input), so "
            "epochs crop pixels instead of decoding files. About 200 KB of disk per image at 224 px: for datasets "
            "read over many epochs."
        },
    )

    # Streaming (pipeline/data/stream.py): train from a datasets IterableDataset, rows read as training consumes them.
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the dataset (Hub id, parquet or WebDataset .tar files, imagefolder) instead of downloading "
            "and preparing all of it: the first step starts after a bounded read. Needs max_steps unless the "
            "dataset's metadata gives its length; eval reads at most max_eval_samples rows (default 1000)."
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "With streaming: rows in the seeded shuffle buffer (0: stream order, shards still "
                  "shuffled)."},
    )
    streaming_label_rows: int = field(
        default=10000,
        metadata={"help": "With streaming and labels that are not a ClassLabel: rows of the first pass that finds "
                  "the label names (rows with other labels are then skipped)."},
    )

    def __post_init__(self):
        if self.dataset_name is None and self.train_dir is None:
            raise PipelineError("no data: set dataset_name (Hub id or folder) or train_dir in the recipe")
        if self.dataset_name is not None and (self.train_dir or self.validation_dir):
            raise PipelineError("set either dataset_name or train_dir/validation_dir, not both")
        if not 0.0 < self.train_val_split < 1.0:
            raise PipelineError(f"train_val_split must be between 0 and 1 (got {self.train_val_split})")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise PipelineError(f"crop_scale_min must be in (0, 1] (got {self.crop_scale_min})")
        if self.problem_type not in (None, *PROBLEM_TYPES):
            raise PipelineError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)} (got {self.problem_type})")
        if self.label_flag_names is not None:
            if self.label_columns is not None:
                raise PipelineError("label_flag_names names the flags of a 0/1 vector column: drop it with "
                                    "label_columns (the column names are the class names)")
            if not self.label_flag_names or len(set(self.label_flag_names)) != len(self.label_flag_names):
                raise PipelineError(f"label_flag_names must be distinct class names (got {self.label_flag_names})")
            if self.problem_type == SINGLE_LABEL:
                raise PipelineError("label_flag_names (0/1 vectors) is multi-label: set problem_type: "
                                    "multi_label_classification or leave it unset")
        if self.label_columns is not None:
            if self.label_column_name is not None:
                raise PipelineError("set either label_columns (several 0/1 columns) or label_column_name, not both")
            if not self.label_columns or len(set(self.label_columns)) != len(self.label_columns):
                raise PipelineError(f"label_columns must name distinct columns (got {self.label_columns})")
            if self.problem_type == SINGLE_LABEL:
                raise PipelineError("label_columns is multi-label: set problem_type: multi_label_classification "
                                    "or leave it unset")
        if self.pixel_cache and not self.fast_transforms:
            raise PipelineError("pixel_cache needs fast_transforms: set fast_transforms: true or pixel_cache: false")
        if self.streaming:
            if self.pixel_cache:
                raise PipelineError("pixel_cache needs the whole dataset on disk: set pixel_cache: false with "
                                    "streaming: true")
            if not self.fast_transforms:
                raise PipelineError("streaming decodes rows with the fast transforms: set fast_transforms: true")
            if self.max_train_samples is not None:
                raise PipelineError("max_train_samples does not apply to a stream: bound the run with max_steps")
            if self.label_columns or self.label_flag_names or self.problem_type == MULTI_LABEL:
                raise PipelineError("streaming is single-label only: load multi-label data without streaming "
                                    "(streaming: false)")
        if self.shuffle_buffer_size < 0:
            raise PipelineError(f"shuffle_buffer_size must be 0 (no buffer) or more (got {self.shuffle_buffer_size})")
        if self.streaming_label_rows < 1:
            raise PipelineError(f"streaming_label_rows must be at least 1 (got {self.streaming_label_rows})")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PipelineError(f"{name} must be a positive number of rows (got {value})")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise PipelineError(f"random_erasing is a probability in [0, 1] (got {self.random_erasing})")
        if not 0 <= self.rand_augment_magnitude <= 30:
            raise PipelineError(f"rand_augment_magnitude must be in 0-30 (got {self.rand_augment_magnitude})")
        if self.rand_augment_num_ops < 1:
            raise PipelineError(f"rand_augment_num_ops must be at least 1 (got {self.rand_augment_num_ops})")
        check_range(self, "preprocessing_num_workers", 1, allow_none=True)


def default_data_args() -> DataArguments:
    """`DataArguments` with every transform and augmentation option at its default, for code that builds transforms
    without a recipe (evaluation, prediction, tests); the dataset named is a placeholder no one loads."""
    return DataArguments(dataset_name="builtin:digits")


@dataclass
class PipelineTrainingArguments(TrainingArguments):
    """`transformers.TrainingArguments` with the pipeline's defaults and a few fields of its own.

    Every Trainer option keeps its usual name (`--learning_rate`, `--num_train_epochs`, `--push_to_hub`, ...).
    """

    backend: Literal["trainer", "accelerate"] = field(
        default="trainer", metadata={"help": "Training loop: the transformers Trainer or a plain Accelerate loop."}
    )
    license: str = field(default="apache-2.0", metadata={"help": "License written in the model card."})
    # Fine-tuning techniques (pipeline/optim.py, loss.py, augment.py, ema.py); each is off at its default.
    layer_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay: block i of L gets lr * layer_decay**(L + 1 - i), the embeddings "
            "lr * layer_decay**(L + 1); the head keeps learning_rate. Typical: 0.65-0.85."
        },
    )
    backbone_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the backbone (the head keeps learning_rate); with layer_decay, the "
                  "rate of the top block."},
    )
    mixup_alpha: float = field(
        default=0.0, metadata={"help": "MixUp on training batches with this Beta(alpha, alpha); 0: off. Typical 0.8."}
    )
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "CutMix on training batches with this Beta(alpha, alpha); 0: off. With "
                               "mixup_alpha too, each batch gets one of the two. Typical 1.0."}
    )
    class_weighted_loss: bool = field(
        default=False,
        metadata={"help": "Weight the loss of each class by n / (classes * count in train), for imbalanced data."},
    )
    ema_decay: float = field(
        default=0.0,
        metadata={
            "help": "Keep an exponential moving average of the weights with this decay (e.g. 0.9998); 0: off. The "
            "average is what is evaluated, picked as best, saved and pushed; checkpoints hold both."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without metric_for_best_model improving."},
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "Smallest change of the metric that counts as an improvement."}
    )

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in output_dir: its previous run's checkpoints and outputs are removed once this "
                  "run's data and model have loaded (other files stay). Off: a run resumes from the folder's last "
                  "checkpoint when it is of the same run, and stops when it is another's."},
    )
    # Defaults that differ from TrainingArguments: evaluate and save every epoch and keep the best model, which is
    # what a fine-tuning run wants; keep the raw image column (the transforms need it).
    output_dir: str | None = field(default="outputs/vit-pipeline", metadata={"help": "Where everything is written."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint: no, steps, epoch or best."})
    logging_strategy: str = field(default="epoch", metadata={"help": "When to log: no, steps or epoch."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the best checkpoint's weights."})
    metric_for_best_model: str | None = field(
        default="accuracy",
        metadata={"help": "Metric that picks the best. Multi-label runs left at accuracy use map (mean average "
                  "precision over the classes)."},
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept on disk (best included)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep False: transforms read raw columns."})
    dataloader_num_workers: int = field(
        default=-1, metadata={"help": "DataLoader worker processes; -1: sized to the machine's cores."}
    )
    dataloader_persistent_workers: bool = field(
        default=True, metadata={"help": "Keep loader workers alive between epochs (no restart cost)."}
    )
    # The Trainer's default (every_save) pushes unevaluated weights to the repo root at every save; the pipeline
    # pushes the finished run (best model, card, results) as one commit, and checkpoints only when asked.
    hub_strategy: Literal["end", "every_save", "checkpoint", "all_checkpoints"] = field(
        default="end",
        metadata={"help": "With push_to_hub: end (the finished run only), every_save (also the model at every "
                  "save), checkpoint (also the last checkpoint, as last-checkpoint/) or all_checkpoints."},
    )
    # Precision: unset (None) means "fastest this hardware does well"; an explicit true or false always wins.
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bfloat16 mixed precision; default: on where the GPU supports it (fp16 on older GPUs, fp32 "
                  "on CPU). Set false (and leave fp16 unset) for fp32."},
    )
    fp16: bool | None = field(
        default=None, metadata={"help": "float16 mixed precision; default: on for GPUs without bf16."}
    )
    tf32: bool | None = field(
        default=None, metadata={"help": "TF32 for fp32 matmuls; default: on where the GPU has it (Ampere or newer)."}
    )

    def __post_init__(self):
        self._check_numbers()
        # Fields set here from the machine rather than by the user: left out of the resolved recipe, so the recipe
        # picks the right precision again on the next machine.
        self._machine_fields: set[str] = set()
        if self.bf16 is None and self.fp16 is None:
            self.bf16, self.fp16 = _auto_precision(self.use_cpu)
            self._machine_fields |= {"bf16", "fp16"}
        else:
            # One of them was chosen: that choice decides, the other is off.
            self.bf16, self.fp16 = bool(self.bf16), bool(self.fp16)
        if self.tf32 is None and not self.use_cpu:
            from transformers.utils import is_torch_tf32_available

            # TF32 keeps fp32's range with a 10-bit mantissa (~1e-3 relative error) and is several times faster.
            self.tf32 = True if is_torch_tf32_available() else None
            self._machine_fields.add("tf32")
        if self.dataloader_num_workers < 0:
            self.dataloader_num_workers = _default_workers()
        if self.dataloader_pin_memory and not _has_accelerator():
            # Pinned memory only speeds up host-to-GPU copies; without a GPU PyTorch warns on every loader.
            self.dataloader_pin_memory = False
        if self.dataloader_num_workers == 0:
            # PyTorch refuses persistent workers when there are none.
            self.dataloader_persistent_workers = False
        if self.push_to_hub and self.hub_model_id is None and self.output_dir:
            # Same rule as the Trainer: the repo is named after the output folder, in the token's namespace.
            self.hub_model_id = Path(self.output_dir).name
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator():
            # A multi-process launch (torchrun) on a machine with no GPU: accelerate finds no device backend and,
            # unless told to use the CPU with gloo, each process trains alone on all the data with no all-reduce.
            if not self.use_cpu:
                self.use_cpu = True
                self._machine_fields.add("use_cpu")
            if self.ddp_backend is None:
                self.ddp_backend = "gloo"
                self._machine_fields.add("ddp_backend")
            if any(os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true" for name in ("FSDP", "DEEPSPEED")):
                logging.getLogger("pipeline").warning(
                    "no GPU: FSDP and DeepSpeed need GPUs; the processes run plain data parallel on the CPU")
        if self.bf16 and not self.use_cpu and not _has_accelerator():
            # A GPU recipe run where there is none: bf16 autocast works on CPU, which the Trainer only allows with
            # use_cpu (it refuses bf16 otherwise).
            self.use_cpu = True
            self._machine_fields.add("use_cpu")
        self._check_techniques()
        if isinstance(self.report_to, str) and "," in self.report_to:
            # `--report_to tensorboard,trackio` on the command line; a recipe can give a YAML list.
            self.report_to = [name.strip() for name in self.report_to.split(",") if name.strip()]
        if self.accelerator_config is None and self.dataloader_pin_memory and _has_accelerator():
            # Copies from pinned memory then overlap with the previous step's compute instead of waiting for it.
            self.accelerator_config = {"non_blocking": True}
        super().__post_init__()
        if self.backend == "accelerate":
            check_accelerate_options(self)
        else:
            check_trainer_trackers(self.report_to)

    def _check_numbers(self) -> None:
        """Range-check every number the user sets (the Trainer's own ones too), before anything loads."""
        check_output_dir(self.output_dir)
        if self.overwrite_output_dir and self.resume_from_checkpoint:
            raise PipelineError("overwrite_output_dir starts over, resume_from_checkpoint continues: set one of them")
        check_range(self, "learning_rate", 0, low_open=True, hint=": try 5e-5 for fine-tuning")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            check_range(self, name, 1)
        check_range(self, "eval_accumulation_steps", 1, allow_none=True)
        if self.max_steps != -1:
            check_range(self, "max_steps", 1, hint=": -1 trains num_train_epochs instead")
        else:
            check_range(self, "num_train_epochs", 0, low_open=True, hint=" (or set max_steps)")
        check_range(self, "warmup_steps", 0, hint=" (a value below 1 is a fraction of the run)")
        check_range(self, "weight_decay", 0)
        check_range(self, "max_grad_norm", 0, hint=" (0 turns clipping off)")
        check_range(self, "adam_beta1", 0, 1, high_open=True)
        check_range(self, "adam_beta2", 0, 1, high_open=True)
        check_range(self, "adam_epsilon", 0, low_open=True)
        check_range(self, "label_smoothing_factor", 0, 1, high_open=True)
        check_range(self, "save_total_limit", 1, allow_none=True, hint=" (null keeps every checkpoint)")
        for name in ("logging_steps", "save_steps", "eval_steps"):
            check_range(self, name, 0, low_open=True, allow_none=True, hint=" (a value below 1 is a fraction of "
                        "the run)")
        check_range(self, "seed", 0, 2**32 - 1)
        check_range(self, "data_seed", 0, 2**32 - 1, allow_none=True)
        check_range(self, "dataloader_num_workers", -1, hint=" (-1 sizes it to the machine)")
        check_range(self, "dataloader_prefetch_factor", 1, allow_none=True)
        check_range(self, "eval_delay", 0)
        check_range(self, "early_stopping_threshold", 0)

    def _check_techniques(self) -> None:
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise PipelineError(f"layer_decay must be in (0, 1] (got {self.layer_decay})")
        if self.backbone_learning_rate is not None and self.backbone_learning_rate <= 0:
            raise PipelineError(f"backbone_learning_rate must be positive (got {self.backbone_learning_rate})")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise PipelineError(f"{name} must be 0 (off) or positive (got {getattr(self, name)})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise PipelineError(f"ema_decay must be in [0, 1), 0 for off (got {self.ema_decay})")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise PipelineError(f"early_stopping_patience must be at least 1 (got {self.early_stopping_patience})")
            if str(plain(self.eval_strategy)) == "no":
                raise PipelineError("early_stopping_patience needs evaluations: set eval_strategy to epoch or steps")
            if not self.load_best_model_at_end or not self.metric_for_best_model:
                raise PipelineError("early_stopping_patience needs load_best_model_at_end: true and a "
                                    "metric_for_best_model")


DATACLASSES = (ModelArguments, DataArguments, PipelineTrainingArguments)
