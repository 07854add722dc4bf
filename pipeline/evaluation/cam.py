"""Explanation maps of any image classifier: attention rollout for ViTs, pytorch-grad-cam's CAMs for every family.

One table (`TARGET_LAYERS`) maps each model family to the layer its class activation maps are read from and how that
layer's output becomes a [B, C, h, w] grid (`reshape_transform`): the last block's first norm for a ViT (the [CLS],
distillation and register tokens dropped), the norm after the last stage for Swin, the last stage of a CNN. The model
is wrapped to return logits (transformers returns a ModelOutput; grad-cam wants a tensor).

Like `rollout.py`, this module imports nothing of the package at module level but `PipelineError`: `vit-pipeline demo
--write_space` copies it next to the Space's app.py. pytorch-grad-cam (the `explain` extra) is imported when a CAM
method runs.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn

from vit_pipeline import PipelineError

# --method name -> pytorch_grad_cam class. rollout is attention rollout (rollout.py), no grad-cam.
CAM_METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "hirescam": "HiResCAM",
               "layercam": "LayerCAM", "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM", "scorecam": "ScoreCAM"}
METHODS = ("rollout", *CAM_METHODS)
EXTRA = "pip install 'vit-pipeline[explain]'"

# model_type -> (the module CAMs read: the LAST module whose qualified name matches, how its output is laid out).
# "tokens": [B, prefix + h*w, C] on the patch grid (ViT-style; prefix = [CLS], distillation, register tokens);
# "grid": [B, h*w, C] on the last stage's grid (Swin); "conv": [B, C, h, w] (CNNs).
_VIT_BLOCK_NORM = r"\.layers?\.\d+\.(layernorm_before|norm1)$"
TARGET_LAYERS = {
    **{family: (_VIT_BLOCK_NORM, "tokens") for family in ("vit", "deit", "beit", "dinov2",
                                                          "dinov2_with_registers", "vit_msn")},
    "swin": (r"^swin\.layernorm$", "grid"),
    "swinv2": (r"^swinv2\.layernorm$", "grid"),
    **{family: (r"\.encoder\.stages\.\d+$", "conv") for family in ("resnet", "convnext", "convnextv2", "regnet",
                                                                     "bit")},
    "efficientnet": (r"\.encoder\.top_activation$", "conv"),
    "mobilenet_v2": (r"\.conv_1x1$", "conv"),
    "mobilenet_v1": (r"\.layer\.\d+$", "conv"),
}


class ExtraMissing(PipelineError):
    """A CAM method asked for without pytorch-grad-cam installed (the explain extra)."""


class LogitsOf(nn.Module):
    """The classifier as grad-cam calls it: pixel_values in, logits out (not a ModelOutput)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def methods_for(model) -> list[str]:
    """The --method values that apply to `model`: rollout for ViT-family models, the CAM methods for a known family."""
    return (["rollout"] if _rollout_module().has_attentions(model) else []) + (
        list(CAM_METHODS) if model.config.model_type in TARGET_LAYERS else [])


def default_method(model) -> str:
    """rollout for a ViT-family model, Grad-CAM for the rest (CNNs, Swin)."""
    return "rollout" if _rollout_module().has_attentions(model) else "gradcam"


def check_method(model, method: str) -> None:
    """Refuse a method that does not apply to the model, in one line naming those that do.

    Raises:
        PipelineError: an unknown method, or one the model's family has no layer or attention for.
    """
    if method not in METHODS:
        raise PipelineError(f"unknown method '{method}': use one of {', '.join(METHODS)}")
    usable = methods_for(model)
    if method not in usable:
        name, family = type(model).__name__, model.config.model_type
        why = "no ViT-style global self-attention" if method == "rollout" else "no target layer known"
        raise PipelineError(f"--method {method} does not apply to {name} ({family}: {why}): use "
                            f"{', '.join(usable) if usable else 'another model family'}")


def target_layer(model) -> tuple[str, nn.Module, str]:
    """(qualified name, module, layout) of the layer a CAM method reads in `model` (see TARGET_LAYERS)."""
    pattern, layout = TARGET_LAYERS[model.config.model_type]
    found = [(name, module) for name, module in model.named_modules() if re.search(pattern, name)]
    if not found:
        raise PipelineError(f"{type(model).__name__} has no module matching {pattern}: explain cannot pick its "
                            "target layer")
    return (*found[-1], layout)


def reshape_for(model, layout: str, input_size: tuple[int, int]):
    """The `reshape_transform` that turns the target layer's output into [B, C, h, w] (None for a CNN)."""
    if layout == "conv":
        return None
    height, width = input_size
    if layout == "tokens":
        patch = model.config.patch_size
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
        grid = (height // ph, width // pw)

    def reshape(tensor: torch.Tensor) -> torch.Tensor:
        tokens = tensor.shape[1]
        if layout == "tokens":
            h, w = grid
        else:  # the last stage's grid keeps the input's aspect ratio
            h = max(1, round(math.sqrt(tokens * height / width)))
            w = tokens // h
        # The patch tokens are the last h*w: [CLS], DeiT's distillation token and registers come first.
        patches = tensor[:, tokens - h * w:, :]
        return patches.reshape(tensor.shape[0], h, w, tensor.shape[2]).permute(0, 3, 1, 2)

    return reshape


def cam_maps(model, pixel_values: torch.Tensor, method: str, targets: list[int]) -> np.ndarray:
    """The CAM maps [B, H, W] in [0, 1] at the input's size, of class `targets[i]` for image i.

    Raises:
        ExtraMissing: pytorch-grad-cam is not installed (the explain extra).
        PipelineError: the family has no target layer.
    """
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise ExtraMissing(f"--method {method} needs pytorch-grad-cam, the explain extra: {EXTRA}") from err
    _, layer, layout = target_layer(model)
    cam_class = getattr(pytorch_grad_cam, CAM_METHODS[method])
    was_training = model.training
    with cam_class(LogitsOf(model), [layer], reshape_transform=reshape_for(model, layout,
                                                                           tuple(pixel_values.shape[-2:]))) as cam:
        maps = cam(input_tensor=pixel_values, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    model.train(was_training)
    return np.asarray(maps, dtype=np.float32)


def _rollout_module():
    try:
        from vit_pipeline.evaluation import rollout
    except ImportError:  # inside a Space: rollout.py sits next to cam.py
        import rollout
    return rollout


def explanation_maps(model, pixel_values: torch.Tensor, method: str, targets: list[int], head_fusion: str = "mean",
                     discard_ratio: float = 0.9) -> np.ndarray:
    """The maps [B, H, W] in [0, 1] of `method` at the input's size, of class `targets[i]` for image i (rollout:
    class-agnostic, `head_fusion` and `discard_ratio` its options, upsampled bilinearly from the patch grid).

    Raises:
        PipelineError: the method does not apply to the model (see `check_method`), or its library is missing.
    """
    check_method(model, method)
    if method != "rollout":
        return cam_maps(model, pixel_values, method, targets)
    grid = _rollout_module().attention_rollout(model, pixel_values, head_fusion, discard_ratio)
    size = tuple(pixel_values.shape[-2:])
    return torch.nn.functional.interpolate(grid[:, None].float(), size=size, mode="bilinear",
                                           align_corners=False)[:, 0].clamp(0, 1).numpy()
