"""Which weights train, and at which learning rate: frozen backbone, head vs backbone rates, layer-wise decay.

Backend-agnostic: functions take a model (a transformers image classifier, or a peft model wrapping one) and plain
numbers, and return parameter groups any `torch.optim` optimizer takes. The Trainer backend calls them from
`PipelineTrainer.create_optimizer`; an Accelerate loop can build its optimizer from the same groups.
"""

from __future__ import annotations

import re

from torch import nn

# The Trainer's own rule for parameters without weight decay (Trainer.get_decay_parameter_names), so the groups
# built here decay exactly what the default optimizer would.
NO_DECAY_NAME_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
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


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that get no weight decay (biases and norms), by the Trainer's rule."""
    from transformers.trainer_pt_utils import get_parameter_names

    decay = set(get_parameter_names(model, [nn.LayerNorm], NO_DECAY_NAME_PATTERNS))
    return {name for name, _ in model.named_parameters() if name not in decay}


def param_groups(model: nn.Module, learning_rate: float, weight_decay: float = 0.0,
                 layer_decay: float | None = None, backbone_learning_rate: float | None = None) -> list[dict]:
    """Split the trainable parameters into optimizer groups with their own learning rate and weight decay.

    The head (every trainable weight outside the backbone) gets `learning_rate`. Backbone weights get
    `backbone_learning_rate` (default: `learning_rate`), multiplied by `layer_decay ** (L + 1 - layer_id)` when
    `layer_decay` is set, so the embeddings move least and the last block most. Biases and norms get no weight
    decay. Frozen weights (`requires_grad=False`) are left out.

    Returns:
        A list of `{"params", "lr", "weight_decay", "name"}` dicts for any `torch.optim` optimizer; `name` is
        `head`, `layer_<id>` or `backbone`, with `_no_decay` for the biases and norms.
    """
    backbone_ids = {id(p) for p in backbone(model).parameters()}
    layers = num_layers(model)
    skip_decay = no_decay_names(model)
    base_lr = backbone_learning_rate if backbone_learning_rate is not None else learning_rate
    groups: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) not in backbone_ids:
            key, lr = "head", learning_rate
        elif layer_decay is not None:
            depth = layer_id(name, layers)
            key, lr = f"layer_{depth}", base_lr * layer_decay ** (layers + 1 - depth)
        else:
            key, lr = "backbone", base_lr
        decay = 0.0 if name in skip_decay else weight_decay
        if decay == 0.0:
            key += "_no_decay"
        group = groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": decay, "name": key})
        group["params"].append(parameter)
    return list(groups.values())


def wants_param_groups(args) -> bool:
    """True when the training arguments ask for learning rates that differ between parts of the model."""
    return getattr(args, "layer_decay", None) is not None or getattr(args, "backbone_learning_rate", None) is not None


def param_groups_for(model: nn.Module, args) -> list[dict]:
    """`param_groups` with the learning rate, weight decay, layer decay and backbone rate of training `args`."""
    return param_groups(model, args.learning_rate, args.weight_decay, layer_decay=args.layer_decay,
                        backbone_learning_rate=args.backbone_learning_rate)
