"""Knowledge distillation: a frozen teacher behind the loss hook both backends share.

Shaped like timm 1.0.23's `timm/task/distillation.py`: one object, `DistillationLoss`, whose single call returns the
combined loss. The backends call it where they call any loss, `loss(outputs, labels, num_items_in_batch=None,
pixel_values=...)` (the batch is passed to a loss that says `reads_batch`), and know nothing of a teacher: the teacher
sits outside the optimizer, in eval mode, without gradients, in bf16 on a GPU.

The teacher sees the student's batch: the same augmented pixels (MixUp and CutMix included), which is what Beyer et al.
2022 ("a good teacher is patient and consistent") found matters. The batch reaches the loss normalized for the student;
when the teacher's image processor differs (size, mean, std), `TeacherView` undoes the student's normalization and
applies the teacher's (resizing first) on the device: one uint8 batch, two views.

The losses, per sample (`soft_term`, `hard_term`):

- soft (Hinton et al. 2015): `(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher/T || student/T)`, the
  KL of the teacher's softened distribution to the student's (what the issue writes KL(student/T || teacher/T));
- hard (DeiT, Touvron et al. 2021): `(1 - alpha) * CE(student, labels) + alpha * CE(student, teacher's top-1)`.

A DeiT student (`DeiTForImageClassificationWithTeacher`) trains its class-token head on the labels and its
distillation-token head on the teacher; its output `logits` (what is evaluated and saved) average both heads, DeiT's
scheme. Multi-label teachers give sigmoid targets: binary cross-entropy against `sigmoid(teacher / T)` (soft) or the
teacher's positives (hard).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from vit_pipeline import PipelineError
from vit_pipeline.data.transforms import Finish, ImageSpec, image_spec
from vit_pipeline.training.loss import reduce_loss

logger = logging.getLogger(__name__)


def soft_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
              multi_label: bool = False) -> torch.Tensor:
    """`T^2 * KL(softmax(teacher/T) || softmax(student/T))` per sample (multi-label: `T^2 * BCE(student/T,
    sigmoid(teacher/T))`, mean over classes). T^2 keeps the gradients' scale as T changes (Hinton et al.)."""
    student, teacher = student_logits.float() / temperature, teacher_logits.float() / temperature
    if multi_label:
        targets = torch.sigmoid(teacher)
        return temperature ** 2 * F.binary_cross_entropy_with_logits(student, targets, reduction="none").mean(-1)
    kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="none")
    return temperature ** 2 * kl.sum(-1)


def hard_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """Cross-entropy on the teacher's top-1 class per sample (multi-label: BCE on the teacher's positives)."""
    student = student_logits.float()
    if multi_label:
        positives = (teacher_logits > 0).float()
        return F.binary_cross_entropy_with_logits(student, positives, reduction="none").mean(-1)
    return F.cross_entropy(student, teacher_logits.argmax(-1), reduction="none")


def unfinish(pixels: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """Undo `Finish(spec)`: the processor's normalized float pixels back to 0..255 (float)."""
    pixels = pixels.float()
    std = torch.tensor(spec.std, device=pixels.device).view(-1, 1, 1)
    mean = torch.tensor(spec.mean, device=pixels.device).view(-1, 1, 1)
    if spec.std_again:
        pixels = pixels * std
    if spec.normalize:
        pixels = pixels * std + mean
    return ((pixels - spec.offset) / spec.rescale).clamp_(0, 255)


def same_view(student: ImageSpec, teacher: ImageSpec) -> bool:
    """True when the teacher's processor makes the student's batch exactly (size and the float finish alike)."""
    finish = ("mean", "std", "rescale", "normalize", "offset", "std_again")
    return student.output_size == teacher.output_size and all(
        getattr(student, f) == getattr(teacher, f) for f in finish)


class TeacherView(nn.Module):
    """The student's normalized batch as the teacher's image processor would have made it from the same pixels.

    Same processor settings: the batch as it is. Otherwise: the student's normalization undone, the pixels resized to
    the teacher's input size (the student's crop is the view both see), and the teacher's rescale and normalize.
    """

    def __init__(self, student: ImageSpec, teacher: ImageSpec):
        super().__init__()
        self.student, self.teacher = student, teacher
        self.identity = same_view(student, teacher)
        self.finish = Finish(teacher)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return pixel_values
        pixels = unfinish(pixel_values, self.student)
        if tuple(pixels.shape[-2:]) != tuple(self.teacher.output_size):
            pixels = F.interpolate(pixels, size=self.teacher.output_size, mode="bilinear", antialias=True,
                                   align_corners=False).clamp_(0, 255)
        return self.finish(pixels)


class Teacher:
    """A trained classifier, frozen: eval mode, no gradients, outside any optimizer; moved to the batch's device
    (in bf16 on GPUs that have it) on its first call.

    Args:
        model: the teacher (`AutoModelForImageClassification`).
        view: the `TeacherView` from the student's batch to the teacher's input.
    """

    def __init__(self, model: nn.Module, view: TeacherView):
        self.model = model.eval().requires_grad_(False)
        self.view = view
        self.device = None
        self.dtype = torch.float32

    def _to(self, device: torch.device) -> None:
        if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
            self.dtype = torch.bfloat16
        self.model.to(device=device, dtype=self.dtype)
        self.view.to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The teacher's float32 logits on the student's batch."""
        if self.device != pixel_values.device:
            self._to(pixel_values.device)
        inputs = self.view(pixel_values).to(self.dtype)
        return self.model(pixel_values=inputs).logits.float()


def student_heads(outputs) -> tuple:
    """(the logits trained on the labels, the logits trained on the teacher): a DeiT student's class and distillation
    heads, else the logits twice."""
    distilled = getattr(outputs, "distillation_logits", None)
    if distilled is None:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        return logits, logits
    return outputs.cls_logits, distilled


class DistillationLoss:
    """The loss hook with a teacher: the label loss of `base` and the teacher's term, weighted by `alpha`.

    Called as any loss of `training.loss` (`loss(outputs, labels, num_items_in_batch=None)`), plus the batch's
    `pixel_values` on training steps; without them (evaluation) it is `base` alone on the output logits, so
    eval_loss stays the label loss of the model that is saved.

    Args:
        base: the label loss (`ClassificationLoss` or `MultiLabelLoss`, with their own options).
        teacher: the frozen `Teacher`.
        kind: "soft" or "hard".
        alpha: weight of the teacher's term.
        temperature: T of the soft term.
        multi_label: sigmoid targets instead of softmax.
    """

    reads_batch = True  # the backends pass `pixel_values` to a loss that reads the batch

    def __init__(self, base, teacher: Teacher, kind: str = "soft", alpha: float = 0.5, temperature: float = 4.0,
                 multi_label: bool = False):
        self.base, self.teacher = base, teacher
        self.kind, self.alpha, self.temperature, self.multi_label = kind, float(alpha), float(temperature), multi_label

    def per_sample(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        """The label loss of each sample on the output logits (what evaluation reports)."""
        return self.base.per_sample(outputs, labels)

    def combined(self, outputs, labels: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Each sample's `(1 - alpha) * label loss + alpha * teacher term`."""
        on_labels, on_teacher = student_heads(outputs)
        label_loss = self.base.per_sample({"logits": on_labels}, labels)
        if self.kind == "hard":
            term = hard_term(on_teacher, teacher_logits, self.multi_label)
        else:
            term = soft_term(on_teacher, teacher_logits, self.temperature, self.multi_label)
        return (1.0 - self.alpha) * label_loss + self.alpha * term

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None, pixel_values=None) -> torch.Tensor:
        if pixel_values is None:
            return self.base(outputs, labels, num_items_in_batch)
        per_sample = self.combined(outputs, labels, self.teacher(pixel_values))
        return reduce_loss(per_sample, labels, num_items_in_batch)


def teacher_config(name: str, token: str | None = None):
    """The teacher checkpoint's config (a small file).

    Raises:
        PipelineError: it cannot be loaded.
    """
    from transformers import AutoConfig

    from vit_pipeline.model.load import _load_error

    try:
        return AutoConfig.from_pretrained(name, token=token)
    except Exception as err:
        raise _load_error("teacher config", name, err) from err


def check_teacher(name: str, labels: list[str], multi_label: bool, token: str | None = None) -> None:
    """Refuse, in one line and before any training, a teacher that is not a trained image classifier of `labels`.

    Raises:
        PipelineError: the teacher is not an image classifier with a trained head (a backbone, a text model), or its
            labels (names, order, single- or multi-label) are not the data's.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    config = teacher_config(name, token)
    heads = [a for a in (config.architectures or []) if "ForImageClassification" in a]
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES or not heads:
        what = ", ".join(config.architectures or []) or f"a {config.model_type} config"
        raise PipelineError(f"teacher_model_name_or_path '{name}' is not a trained image classifier ({what}): "
                            "point it at an output folder of vit-pipeline train, or a Hub image classifier, trained "
                            "on this data's labels")
    teacher_labels = [config.id2label[i] for i in sorted(config.id2label)]
    if teacher_labels != list(labels):
        raise PipelineError(f"teacher '{name}' predicts {teacher_labels[:8]}{' ...' if len(teacher_labels) > 8 else ''}"
                            f" but the data's labels are {list(labels)[:8]}{' ...' if len(labels) > 8 else ''}: "
                            "distil from a teacher trained on these labels, in this order")
    teacher_multi = getattr(config, "problem_type", None) == "multi_label_classification"
    if teacher_multi != multi_label:
        raise PipelineError(f"teacher '{name}' is {'multi' if teacher_multi else 'single'}-label but the data is "
                            f"{'multi' if multi_label else 'single'}-label: distil from a teacher of the same kind")


def load_teacher(name: str, student_processor, token: str | None = None) -> Teacher:
    """The frozen teacher, with the view from the student's batches to its input."""
    from transformers import AutoImageProcessor

    from vit_pipeline.model.load import load_classifier

    model = load_classifier(name, token=token)
    try:
        processor = AutoImageProcessor.from_pretrained(name, token=token)
    except Exception as err:
        raise PipelineError(f"cannot load the image processor of teacher '{name}': {type(err).__name__}") from err
    view = TeacherView(image_spec(student_processor), image_spec(processor))
    logger.info("Teacher %s (%s, %.1fM parameters): frozen%s", name, type(model).__name__,
                sum(p.numel() for p in model.parameters()) / 1e6,
                "" if view.identity else f"; its own input view ({view.teacher.output_size[0]} px, its mean/std)")
    return Teacher(model, view)


def build_distillation(args, base, image_processor, multi_label: bool = False) -> DistillationLoss:
    """The distillation loss hook that `args` asks for, around the label loss `base`."""
    teacher = load_teacher(args.teacher_model_name_or_path, image_processor)
    return DistillationLoss(base, teacher, kind=args.distillation_type, alpha=args.distillation_alpha,
                            temperature=args.distillation_temperature, multi_label=multi_label)


def teacher_cost(args, image_processor, image_size: tuple[int, int], student_images_per_s: float, warmup: int,
                 steps: int) -> dict:
    """What the teacher adds to a training step, for `benchmark`: its forward pass on a batch of the student's size
    (through its own view), timed like the student's steps, and its share of a distillation step.

    Args:
        student_images_per_s: the student's model-only rate (Trainer steps on a batch already on the device).

    Returns:
        {"teacher": name, "teacher_ms_per_step", "student_ms_per_step", "teacher_share"}: the share is
        teacher / (teacher + student) of a step's time.
    """
    import time

    from vit_pipeline.training.throughput import _synchronize

    teacher = load_teacher(args.teacher_model_name_or_path, image_processor)
    device = args.device
    pixels = torch.randn(args.train_batch_size, 3, *image_size, device=device)
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            start = time.perf_counter()
        teacher(pixels)
    _synchronize(device)
    accumulation = args.gradient_accumulation_steps
    teacher_ms = 1000 * (time.perf_counter() - start) / steps * accumulation
    student_ms = 1000 * args.train_batch_size * accumulation / student_images_per_s
    return {"teacher": args.teacher_model_name_or_path, "teacher_ms_per_step": teacher_ms,
            "student_ms_per_step": student_ms, "teacher_share": teacher_ms / (teacher_ms + student_ms)}
