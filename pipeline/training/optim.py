"""Which weights train, and at which learning rate: frozen backbone, head vs backbone rates, layer-wise decay.

Backend-agnostic: functions take a model (a transformers image classifier, or a peft model wrapping one) and plain
numbers, and return parameter groups any `torch.optim` optimizer takes. The Trainer backend calls them from
`PipelineTrainer.create_optimizer`; an Accelerate loop can build its optimizer from the same groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from vit_pipeline.model.inspect import backbone, check_layer_decay, depth_pattern, layer_id, num_layers

if TYPE_CHECKING:
    from vit_pipeline.config.training_args import PipelineTrainingArguments

# The Trainer's own rule for parameters without weight decay (Trainer.get_decay_parameter_names), so the groups
# built here decay exactly what the default optimizer would.
NO_DECAY_NAME_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


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
    `layer_decay` is set, so the embeddings (stem) move least and the last block
    (or stage, for CNNs and Swin) most. Biases and norms get no weight
    decay. Frozen weights (`requires_grad=False`) are left out.

    Returns:
        A list of `{"params", "lr", "weight_decay", "name"}` dicts for any `torch.optim` optimizer; `name` is
        `head`, `layer_<id>` or `backbone`, with `_no_decay` for the biases and norms.
    """
    backbone_ids = {id(p) for p in backbone(model).parameters()}
    if layer_decay is not None:
        check_layer_decay(model)
    layers = num_layers(model)
    pattern = depth_pattern(model)
    skip_decay = no_decay_names(model)
    base_lr = backbone_learning_rate if backbone_learning_rate is not None else learning_rate
    groups: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) not in backbone_ids:
            key, lr = "head", learning_rate
        elif layer_decay is not None:
            depth = layer_id(name, layers, pattern)
            key, lr = f"layer_{depth}", base_lr * layer_decay ** (layers + 1 - depth)
        else:
            key, lr = "backbone", base_lr
        decay = 0.0 if name in skip_decay else weight_decay
        if decay == 0.0:
            key += "_no_decay"
        group = groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": decay, "name": key})
        group["params"].append(parameter)
    return list(groups.values())


def wants_param_groups(args: PipelineTrainingArguments) -> bool:
    """True when the training arguments ask for learning rates that differ between parts of the model."""
    return args.layer_decay is not None or args.backbone_learning_rate is not None


def param_groups_for(model: nn.Module, args: PipelineTrainingArguments) -> list[dict]:
    """`param_groups` with the learning rate, weight decay, layer decay and backbone rate of training `args`."""
    return param_groups(model, args.learning_rate, args.weight_decay, layer_decay=args.layer_decay,
                        backbone_learning_rate=args.backbone_learning_rate)
