"""Load the checkpoint and its image processor, with the dataset's labels and a fresh head where needed."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

from pipeline import PipelineError

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _load_error(what: str, name: str, err: Exception) -> PipelineError:
    text = " ".join(str(err).split())
    if Path(name).exists():
        hint = "check the folder holds a transformers checkpoint"
    else:
        hint = "check the id and revision, your network (or HF_HUB_OFFLINE), and HF_TOKEN for private repos"
    return PipelineError(f"cannot load the {what} of '{name}': {type(err).__name__}: {text[:300]}; {hint}")


def load_image_processor(model_args):
    """Load the checkpoint's image processor (`AutoImageProcessor`): size, mean and std come from it."""
    try:
        return AutoImageProcessor.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            cache_dir=model_args.cache_dir,
            trust_remote_code=model_args.trust_remote_code,
            token=getattr(model_args, "token", None),
        )
    except Exception as err:
        raise _load_error("image processor", model_args.model_name_or_path, err) from err


def load_model(model_args, labels: list[str], token: str | None = None):
    """Load an image classifier with one output per label.

    The label names go into the config (`id2label` / `label2id`), so the saved model reports them. When the
    checkpoint's head has another shape (a backbone, or another label set), a fresh head is initialised.

    Args:
        model_args: a `ModelArguments`.
        labels: class names, in label-id order.
        token: Hub token for private checkpoints.

    Raises:
        PipelineError: the checkpoint cannot be found, is not an image classifier or ViT-family backbone, or has
            no weights (and `from_scratch` is off).
    """
    name = model_args.model_name_or_path
    common = dict(revision=model_args.model_revision, cache_dir=model_args.cache_dir,
                  trust_remote_code=model_args.trust_remote_code, token=token)
    try:
        config = AutoConfig.from_pretrained(
            name,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            finetuning_task="image-classification",
            **common,
        )
    except Exception as err:
        raise _load_error("config", name, err) from err
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES and not model_args.trust_remote_code:
        raise PipelineError(f"'{name}' is a {config.model_type} checkpoint, not an image classifier or ViT-family "
                            "backbone: pick one such as google/vit-base-patch16-224-in21k")
    config._attn_implementation = model_args.attn_implementation

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
