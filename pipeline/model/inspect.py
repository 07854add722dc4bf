"""What a model is made of: the transformers model inside a peft wrapper, its backbone, its blocks, its head.

Backend-agnostic and architecture-aware helpers the model options, the optimizer groups and the reports share.
"""

from __future__ import annotations

import re

from torch import nn

# Transformer blocks: `vit.layers.3.` (transformers 5) or `encoder.layer.3.` (older layouts, other ViT families).
_BLOCK = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def backbone(model: nn.Module) -> nn.Module:
    """The backbone module of an image classifier (`model.vit` for ViT): everything but the head."""
    inner = base_model(model)
    prefix = getattr(inner, "base_model_prefix", "")
    module = getattr(inner, prefix, None) if prefix else None
    if not isinstance(module, nn.Module):
        raise ValueError(f"{type(inner).__name__} has no backbone attribute '{prefix}'")
    return module


def num_layers(model: nn.Module) -> int:
    """Number of transformer blocks in the backbone (`config.num_hidden_layers`)."""
    return int(base_model(model).config.num_hidden_layers)


def layer_id(name: str, layers: int) -> int:
    """Depth of a backbone parameter for layer-wise decay: 0 for embeddings, i + 1 for block i, layers + 1 above.

    The final norm and anything else after the last block share the top id with the head (as in BEiT / timm).
    """
    if "embeddings" in name or name.endswith(("cls_token", "position_embeddings", "mask_token")):
        return 0
    match = _BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    return layers + 1


def freeze_backbone(model: nn.Module) -> int:
    """Stop gradients to every backbone weight; only the head trains. Returns how many parameters were frozen."""
    frozen = 0
    for parameter in backbone(model).parameters():
        if parameter.requires_grad:
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen
