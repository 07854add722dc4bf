"""Load the checkpoint and its image processor, with the dataset's labels and a fresh head where needed."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

from vit_pipeline import PipelineError
from vit_pipeline.utils import WEIGHT_FILES

logger = logging.getLogger(__name__)



def _load_error(what: str, name: str, err: Exception) -> PipelineError:
    text = " ".join(str(err).split())
    if Path(name).exists():
        hint = "check the folder holds a transformers checkpoint"
    else:
        hint = "check the id and revision, your network (or HF_HUB_OFFLINE), and HF_TOKEN for private repos"
    return PipelineError(f"cannot load the {what} of '{name}': {type(err).__name__}: {text[:300]}; {hint}")


def load_image_processor(model_args, token: str | None = None):
    """Load the checkpoint's image processor (`AutoImageProcessor`): size, mean and std come from it."""
    try:
        return AutoImageProcessor.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            cache_dir=model_args.cache_dir,
            trust_remote_code=model_args.trust_remote_code,
            token=token,
        )
    except Exception as err:
        raise _load_error("image processor", model_args.model_name_or_path, err) from err


def check_image_classifier(config, name: str, trust_remote_code: bool = False) -> None:
    """Refuse a checkpoint whose type has no `AutoModelForImageClassification` class (a text model, a detector...)."""
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES and not trust_remote_code:
        raise PipelineError(f"'{name}' is a {config.model_type} checkpoint, which AutoModelForImageClassification "
                            "cannot build: pick an image classifier or backbone (ViT, DeiT, BEiT, Swin, DINOv2, "
                            "ConvNeXt, ResNet, EfficientNet, ...)")


def load_config(model_args, token: str | None = None):
    """The checkpoint's config alone (a small file): what the option checks need before data or weights load."""
    try:
        return AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                          cache_dir=model_args.cache_dir, token=token,
                                          trust_remote_code=model_args.trust_remote_code)
    except Exception as err:
        raise _load_error("config", model_args.model_name_or_path, err) from err


def _pick_trainable_class(config, distilled: bool = False) -> None:
    # DeiT and LeViT map to two classes; the distilled one ("WithTeacher") has no loss and cannot be fine-tuned
    # alone, and a config without architectures (a bare backbone) leaves AutoModel unable to choose. With a teacher
    # (`distilled`) it is the one to train: its distillation-token head learns from the teacher (the saved config
    # names it, so AutoModelForImageClassification and pipeline() load it again).
    classes = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(config.model_type)
    if isinstance(classes, tuple):
        with_teacher = [c for c in classes if "WithTeacher" in c]
        if distilled and with_teacher:
            config.architectures = with_teacher[:1]
            return
        named = [a for a in (config.architectures or []) if a in classes and "WithTeacher" not in a]
        config.architectures = named[:1] or [classes[0]]


def _attention(config, requested: str | None) -> str | None:
    # CNNs have no attention: asking them for sdpa is an error in transformers, so they keep their default.
    from transformers import AutoModelForImageClassification as Auto

    try:
        cls = Auto._model_mapping[type(config)]
    except KeyError:
        return requested
    if isinstance(cls, (tuple, list)):
        cls = next((c for c in cls if c.__name__ in (config.architectures or [])), cls[0])
    if requested == "sdpa" and not getattr(cls, "_supports_sdpa", False):
        return None
    return requested


def load_model(model_args, labels: list[str], token: str | None = None, multi_label: bool = False,
               distilled: bool = False):
    """Load an image classifier with one output per label.

    The label names go into the config (`id2label` / `label2id`), so the saved model reports them. When the
    checkpoint's head has another shape (a backbone, or another label set), a fresh head is initialised.

    Args:
        model_args: a `ModelArguments`.
        labels: class names, in label-id order.
        token: Hub token for private checkpoints.
        multi_label: set `config.problem_type = "multi_label_classification"`: the model's own loss is then
            binary cross-entropy, and `pipeline("image-classification")` on the saved model returns sigmoid scores
            (one independent probability per label). Otherwise the problem type is left unset (softmax).
        distilled: a teacher trains it: families with a distillation head (DeiT) load their "WithTeacher" class.

    Raises:
        PipelineError: the checkpoint cannot be found, is of a type `AutoModelForImageClassification` has no
            class for, or has no weights (and `from_scratch` is off).
    """
    name = model_args.model_name_or_path
    common = dict(revision=model_args.model_revision, cache_dir=model_args.cache_dir,
                  trust_remote_code=model_args.trust_remote_code, token=token)
    try:
        config = AutoConfig.from_pretrained(
            name,
            # num_labels follows from id2label (passing both warns that they disagree while they are set in turn).
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            finetuning_task="image-classification",
            # Also clears a multi-label checkpoint's problem type when it is fine-tuned on single-label data.
            problem_type="multi_label_classification" if multi_label else None,
            **common,
        )
    except Exception as err:
        raise _load_error("config", name, err) from err
    check_image_classifier(config, name, model_args.trust_remote_code)
    _pick_trainable_class(config, distilled)
    config._attn_implementation = _attention(config, model_args.attn_implementation)

    if model_args.from_scratch:
        logger.info("Building %s from its config with random weights (from_scratch)", name)
        return AutoModelForImageClassification.from_config(config, trust_remote_code=model_args.trust_remote_code)

    local = Path(name)
    if local.is_dir() and not any((local / f).exists() for f in WEIGHT_FILES):
        raise PipelineError(f"'{name}' holds no weights ({', '.join(WEIGHT_FILES)}): set from_scratch: true to "
                            "train it from random initialisation, or point model_name_or_path at a checkpoint")
    try:
        # ignore_mismatched_sizes: a checkpoint fine-tuned on other labels gets a fresh head of the right size.
        model, info = AutoModelForImageClassification.from_pretrained(
            name, config=config, ignore_mismatched_sizes=True, output_loading_info=True, **common
        )
    except Exception as err:
        raise _load_error("model", name, err) from err
    fresh = sorted(set(info.get("missing_keys", [])) | {k for k, *_ in info.get("mismatched_keys", [])})
    if fresh:
        logger.info("Fresh (randomly initialised) weights: %s", ", ".join(fresh))
    return model


def load_classifier(name: str, token: str | None = None, revision: str = "main",
                    attn_implementation: str | None = None):
    """Load a trained image classifier as saved (its own head and `id2label`), in eval mode.

    Raises:
        PipelineError: the checkpoint cannot be loaded (with what to check).
    """
    kwargs = {"revision": revision, "token": token}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForImageClassification.from_pretrained(name, **kwargs).eval()
    except Exception as err:
        raise _load_error("model", name, err) from err
