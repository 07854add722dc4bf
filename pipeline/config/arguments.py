"""The argument dataclasses: `ModelArguments`, `DataArguments` (here) and `PipelineTrainingArguments`
(`training_args.py`), together in `DATACLASSES`.

Every field is a recipe key and a command-line flag. Single-field range checks and cross-field checks run in
`__post_init__`, before any data or weights are loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from vit_pipeline import PipelineError
from vit_pipeline.config.checks import check_range
from vit_pipeline.config.training_args import PipelineTrainingArguments

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
    calibrate: bool = field(
        default=True,
        metadata={"help": "Single-label runs: fit a temperature on the eval split after training (temperature "
                  "scaling, Guo et al. 2017) and fold it into the classifier, so pipeline() returns calibrated "
                  "probabilities (top-1 never changes). Multi-label runs are not calibrated: their tuned thresholds "
                  "are kept."},
    )
    lora_save_adapter: bool = field(
        default=True, metadata={"help": "Also keep the unmerged adapter in OUTPUT_DIR/adapter (a few MB), its head "
                                "as trained: the merged model's head is also divided by the calibration temperature."}
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
    test_split: str | None = field(
        default=None,
        metadata={"help": "Split scored once on the saved model for the card's figures, never used to choose anything "
                  "(best checkpoint, early stopping, thresholds, calibration); default: a split named test when "
                  "another split is the eval split, else test_fraction of train held out; none: no test split."},
    )
    test_fraction: float = field(
        default=0.1,
        metadata={"help": "Fraction of the training rows (what is left after the eval split) held out, stratified "
                  "and seeded, as the test split when the dataset has none; 0: no test split."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep at most this many training rows."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many eval rows (and as many test rows)."}
    )
    verify_images: bool = field(
        default=True,
        metadata={
            "help": "Decode every image once before training, so a bad file fails in seconds instead of hours in."
        },
    )
    bad_images: Literal["error", "skip"] = field(
        default="error", metadata={"help": "What to do with unreadable images: stop with an error, or skip them."}
    )
    exclude_images: str | None = field(
        default=None,
        metadata={"help": "A file of images to leave out, one per line: the exclude.txt `vit-pipeline audit` writes "
                  "(file paths, or split:row for images without a file of their own). They are dropped from every "
                  "split before training, counted in the log and the model card; the data itself is not touched. "
                  "A line naming an image that is not in the data is an error."},
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
    pixel_cache: bool | None = field(
        default=None,
        metadata={
            "help": "With fast_transforms: decode every image once before training and keep its uint8 pixels in the "
            "datasets cache (training images at 8/7 of the model's size, eval images as the exact model input), so "
            "epochs crop pixels instead of decoding files. About 200 KB of disk per image at 224 px. Unset: on when "
            "the run reads every image at least twice and the cache takes at most 10 GiB and a quarter of the free "
            "disk (the log and the resolved recipe say which); true / false: always / never."
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
        if not 0.0 <= self.test_fraction < 1.0:
            raise PipelineError(f"test_fraction must be in [0, 1) (got {self.test_fraction}); 0: no test split")
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
        if self.exclude_images is not None and not os.path.isfile(self.exclude_images):
            raise PipelineError(f"exclude_images {self.exclude_images} is not a file: give the exclude.txt that "
                                "`vit-pipeline audit --output_dir A` wrote (A/exclude.txt)")
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
            if self.exclude_images is not None:
                raise PipelineError("exclude_images drops rows of data loaded whole: set streaming: false with it")
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


DATACLASSES = (ModelArguments, DataArguments, PipelineTrainingArguments)
