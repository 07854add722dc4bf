"""What a model is made of: the transformers model inside a peft wrapper, its backbone, its blocks, its head.

Backend-agnostic and architecture-aware helpers the model options, the optimizer groups and the reports share. Any
`AutoModelForImageClassification` works: the depth of a weight is its transformer block (ViT, DeiT, BEiT, DINOv2),
its stage (ResNet, ConvNeXt, RegNet, Swin) or its MBConv block (EfficientNet), so layer-wise decay means the same
thing everywhere: the stem moves least, the last block or stage most.
"""

from __future__ import annotations

import re

from torch import nn

from vit_pipeline import PipelineError

# Depth units, most specific first: CNN stages (`encoder.stages.2.layers.0.`: the stage, not the layer inside it),
# EfficientNet's MBConv blocks (`encoder.blocks.7.`), Swin's stages and transformer blocks (`encoder.layers.1.`,
# `vit.layers.3.`, `encoder.layer.3.`).
_UNITS = (re.compile(r"(?:^|\.)stages\.(\d+)\."), re.compile(r"(?:^|\.)encoder\.blocks\.(\d+)\."),
          re.compile(r"(?:^|\.)layers?\.(\d+)\."))
_BLOCK = _UNITS[-1]
# The stem: patch / convolution embeddings and the tokens added to them.
_STEM = ("embeddings", "embedder")

# Families whose weights do not depend on the input resolution (convolutions and global pooling): a new image_size
# only changes what the image processor produces.
CONVOLUTIONAL = frozenset({"resnet", "convnext", "convnextv2", "efficientnet", "regnet", "bit", "mobilenet_v1",
                           "mobilenet_v2", "van", "poolformer"})
# Families with learned absolute position embeddings on a patch grid: image_size interpolates them once.
POSITION_EMBEDDINGS = frozenset({"vit", "deit", "dinov2", "vit_msn", "vit_mae", "dinov3_vit"})
# Default LoRA targets per family (transformers 5 module names); attention families share q_proj / v_proj.
LORA_TARGETS = {"convnext": ["pwconv1", "pwconv2"], "convnextv2": ["pwconv1", "pwconv2"]}
ATTENTION_LORA_TARGETS = ["q_proj", "v_proj"]


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_multi_label(model: nn.Module) -> bool:
    """True when the model is a multi-label classifier (`config.problem_type == "multi_label_classification"`)."""
    return getattr(base_model(model).config, "problem_type", None) == "multi_label_classification"


def backbone(model: nn.Module) -> nn.Module:
    """The backbone module of an image classifier (`model.vit` for ViT, `model.resnet` for ResNet): all but the head."""
    inner = base_model(model)
    prefix = getattr(inner, "base_model_prefix", "")
    module = getattr(inner, prefix, None) if prefix else None
    if not isinstance(module, nn.Module):
        raise ValueError(f"{type(inner).__name__} has no backbone attribute '{prefix}'")
    return module


def depth_pattern(model: nn.Module) -> re.Pattern | None:
    """The regex whose first group numbers the depth units (blocks or stages) of `model`'s backbone, or None."""
    names = [name for name, _ in backbone(model).named_parameters()]
    for pattern in _UNITS:
        if any(pattern.search(name) for name in names):
            return pattern
    return None


def num_layers(model: nn.Module) -> int:
    """Number of depth units in the backbone: transformer blocks, or stages for CNNs and Swin (0 if none found)."""
    pattern = depth_pattern(model)
    if pattern is None:
        return 0
    ids = {int(m.group(1)) for name, _ in backbone(model).named_parameters() if (m := pattern.search(name))}
    return max(ids) + 1 if ids else 0


def layer_id(name: str, layers: int, pattern: re.Pattern = _BLOCK) -> int:
    """Depth of a backbone parameter for layer-wise decay: 0 for the stem, i + 1 for block (or stage) i, layers + 1
    above.

    The final norm and anything else after the last unit share the top id with the head (as in BEiT / timm).
    """
    if any(stem in name for stem in _STEM) or name.endswith(("cls_token", "position_embeddings", "mask_token")):
        return 0
    match = pattern.search(name)
    if match:
        return int(match.group(1)) + 1
    return layers + 1


def _keep_eval(module: nn.Module, _inputs) -> None:
    # A forward pre-hook: the Trainer calls model.train() every step; a frozen batch norm stays in eval mode.
    module.training = False


def freeze_backbone(model: nn.Module) -> int:
    """Stop gradients to every backbone weight; only the head trains. Returns how many parameters were frozen.

    Batch norms of the backbone (ResNet, EfficientNet, RegNet) are frozen too: they normalize with their running
    statistics and never update them, so the backbone computes exactly what it did before fine-tuning.
    """
    frozen = 0
    for parameter in backbone(model).parameters():
        if parameter.requires_grad:
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    for module in backbone(model).modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_keep_eval)
    return frozen


def lora_targets(model_type: str, requested: list[str] | None) -> list[str]:
    """The modules LoRA adapts: the ones asked for, else the family's default.

    Raises:
        PipelineError: none asked for and the family has no default (a CNN without linear layers).
    """
    if requested:
        return list(requested)
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    if model_type in CONVOLUTIONAL:
        raise PipelineError(f"use_peft: {model_type} models have no attention projections for LoRA's default targets: "
                            "set lora_target_modules to some of its layers (e.g. convolution), or use_peft: false")
    return ATTENTION_LORA_TARGETS


def check_model_options(config, model_args, training_args) -> None:
    """Refuse options that assume a ViT on a model that is not one, in one line naming the option and the model type.

    Runs on the checkpoint's config only, before data or weights are loaded. Options that work per architecture
    (layer_decay by stage, image_size on a CNN, LoRA on ConvNeXt's pointwise layers) pass.
    """
    model_type = config.model_type
    if model_args.image_size is not None:
        if model_type == "swin" and getattr(config, "use_absolute_embeddings", False):
            raise PipelineError("image_size: this swin model has absolute position embeddings of a fixed size: "
                                "remove image_size")
        if model_type not in POSITION_EMBEDDINGS | CONVOLUTIONAL | {"swin", "swinv2"}:
            raise PipelineError(f"image_size is not supported for {model_type} models (only learned position "
                                "embeddings are resized, and CNN / Swin inputs resized): remove image_size")
    if model_args.use_peft:
        lora_targets(model_type, model_args.lora_target_modules)


def check_layer_decay(model: nn.Module) -> None:
    """Refuse layer_decay when the backbone has no blocks or stages to number."""
    if num_layers(model) == 0:
        inner = base_model(model)
        raise PipelineError(f"layer_decay: no blocks or stages found in the {inner.config.model_type} backbone "
                            f"({type(inner).__name__}): remove layer_decay")
