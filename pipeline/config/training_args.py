"""`PipelineTrainingArguments`: `transformers.TrainingArguments` with the pipeline's defaults and its own fields.

Range checks, the defaults this machine decides (precision, loader workers) and cross-field checks run in
`__post_init__`, before any data or weights are loaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import TrainingArguments

from vit_pipeline import PipelineError
from vit_pipeline.config.checks import (
    check_accelerate_options,
    check_output_dir,
    check_range,
    check_trainer_trackers,
)
from vit_pipeline.config.machine import _auto_precision, _default_workers, _has_accelerator
from vit_pipeline.utils import plain


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
    # Knowledge distillation (training/distillation.py): a frozen teacher behind the loss both backends share.
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Distil from this trained image classifier (an output folder or Hub id) whose labels are the "
                  "data's: it runs frozen, without gradients, on each augmented training batch (through its own image "
                  "processor's size and normalization); null: no teacher."},
    )
    distillation_type: Literal["soft", "hard"] = field(
        default="soft",
        metadata={"help": "With a teacher: soft, (1 - alpha) * CE + alpha * T^2 * KL(student/T || teacher/T) "
                  "(Hinton et al.); hard, (1 - alpha) * CE + alpha * CE on the teacher's top-1 (DeiT's). A DeiT "
                  "student trains its distillation-token head on the teacher and its class head on the labels; "
                  "multi-label teachers give sigmoid targets."},
    )
    distillation_alpha: float = field(
        default=0.5, metadata={"help": "With a teacher: weight of the teacher's term, in [0, 1] (0: labels only)."}
    )
    distillation_temperature: float = field(
        default=4.0,
        metadata={"help": "With a teacher and distillation_type soft: the temperature T that softens both "
                  "distributions (timm's default 4; the transformers guide uses 5)."},
    )
    baseline: bool = field(
        default=False,
        metadata={"help": "With a teacher: also train the same student without it (OUTPUT_DIR/baseline), then write "
                  "pareto.md, pareto.csv and pareto.png (accuracy against latency, parameters, GFLOPs, file size of "
                  "teacher, students and, with the export extra, their int8 ONNX exports)."},
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
        self._machine_defaults()
        if self.push_to_hub and self.hub_model_id is None and self.output_dir:
            # Same rule as the Trainer: the repo is named after the output folder, in the token's namespace.
            self.hub_model_id = Path(self.output_dir).name
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

    def _machine_defaults(self) -> None:
        """Fill what the user left unset from this machine: precision, TF32, loader workers and pinning, and the CPU
        fallbacks of a GPU recipe or a multi-process launch where there is no GPU."""
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
        # Sized here, before the data is known: the pixel cache's batch path may take it back to 0
        # (`machine.fit_workers_to_data`).
        self._workers_from_machine = self.dataloader_num_workers < 0
        if self.dataloader_num_workers < 0:
            self.dataloader_num_workers = _default_workers()
        if self.dataloader_pin_memory and not _has_accelerator():
            # Pinned memory only speeds up host-to-GPU copies; without a GPU PyTorch warns on every loader.
            self.dataloader_pin_memory = False
        if self.dataloader_num_workers == 0:
            # PyTorch refuses persistent workers when there are none.
            self.dataloader_persistent_workers = False
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
                logging.getLogger("vit_pipeline").warning(
                    "no GPU: FSDP and DeepSpeed need GPUs; the processes run plain data parallel on the CPU")
        if self.bf16 and not self.use_cpu and not _has_accelerator():
            # A GPU recipe run where there is none: bf16 autocast works on CPU, which the Trainer only allows with
            # use_cpu (it refuses bf16 otherwise).
            self.use_cpu = True
            self._machine_fields.add("use_cpu")

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
        self._check_distillation()
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise PipelineError(f"early_stopping_patience must be at least 1 (got {self.early_stopping_patience})")
            if str(plain(self.eval_strategy)) == "no":
                raise PipelineError("early_stopping_patience needs evaluations: set eval_strategy to epoch or steps")
            if not self.load_best_model_at_end or not self.metric_for_best_model:
                raise PipelineError("early_stopping_patience needs load_best_model_at_end: true and a "
                                    "metric_for_best_model")

    def _check_distillation(self) -> None:
        check_range(self, "distillation_alpha", 0, 1)
        check_range(self, "distillation_temperature", 0, low_open=True, hint=": try 4 (timm) or 5 (transformers)")
        if self.baseline and not self.teacher_model_name_or_path:
            raise PipelineError("baseline trains the student again without its teacher: set "
                                "teacher_model_name_or_path, or baseline: false")
