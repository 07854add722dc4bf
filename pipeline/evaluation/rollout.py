"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): where a ViT looks.

Each layer's attention is fused over heads (mean or max), its weakest links dropped (`discard_ratio`), the residual
connection added (A + I, renormalised), and the layers multiplied from the input up; the row of the [CLS] token over
the patch tokens is the map. The attentions need the eager kernel (SDPA and flash attention return none,
transformers#30978), so the model runs that one pass with eager attention and goes back to its kernel afterwards.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vit_pipeline import PipelineError

HEAD_FUSIONS = ("mean", "max", "min")


def _patch_grid(model, pixel_values: torch.Tensor) -> tuple[int, int]:
    patch = getattr(model.config, "patch_size", None)
    if patch is None:
        raise PipelineError(f"{type(model).__name__} has no patch tokens: attention rollout is for ViT-family models")
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return pixel_values.shape[-2] // ph, pixel_values.shape[-1] // pw


def has_attentions(model) -> bool:
    """Whether the model is a ViT-family transformer whose global self-attention rollout can read."""
    config = model.config
    return bool(getattr(config, "num_attention_heads", None)) and getattr(config, "patch_size", None) is not None \
        and isinstance(getattr(config, "num_attention_heads", None), int)


@torch.no_grad()
def attentions_of(model, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The per-layer attention probabilities [B, heads, tokens, tokens] of one forward pass, with eager attention.

    Raises:
        PipelineError: the model has no (global) self-attention to read, e.g. a CNN.
    """
    return forward_with_attentions(model, pixel_values)[1]


@torch.no_grad()
def forward_with_attentions(model, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One forward pass with eager attention: (logits, per-layer attentions [B, heads, tokens, tokens]).

    Raises:
        PipelineError: the model has no (global) self-attention to read, e.g. a CNN.
    """
    name = type(model).__name__
    if not has_attentions(model):
        raise PipelineError(f"{name} has no self-attention maps (a CNN or a model without ViT-style attention): "
                            "explain works for ViT-family models")
    previous = model.config._attn_implementation
    switch = previous != "eager" and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        outputs = model(pixel_values=pixel_values, output_attentions=True)
    except TypeError as err:
        raise PipelineError(f"{name} cannot return its attentions ({err}): explain works for ViT-family "
                            "models") from err
    finally:
        if switch:
            model.set_attn_implementation(previous)
    attentions = getattr(outputs, "attentions", None)
    if not attentions or any(a is None or a.dim() != 4 or a.shape[-1] != a.shape[-2] for a in attentions):
        raise PipelineError(f"{name} returned no global self-attention maps: explain works for ViT-family models")
    return outputs.logits, tuple(attentions)


def attention_rollout(model, pixel_values: torch.Tensor, head_fusion: str = "mean",
                      discard_ratio: float = 0.9) -> torch.Tensor:
    """The attention rollout map of each image.

    Args:
        model: a ViT-family image classifier (ViT, DeiT, BEiT, DINOv2, ...).
        pixel_values: [B, 3, H, W] normalised input (what the image processor gives).
        head_fusion: how the heads of a layer are combined: mean, max or min.
        discard_ratio: share of the weakest attention links dropped in each layer (the [CLS] self-link is kept).

    Returns:
        [B, H/patch, W/patch] float tensor in [0, 1] (1 = most attended), on the CPU.

    Raises:
        PipelineError: the model has no self-attention maps (a CNN), or a bad head_fusion / discard_ratio.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise PipelineError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)} (got {head_fusion})")
    if not 0.0 <= discard_ratio < 1.0:
        raise PipelineError(f"discard_ratio must be in [0, 1) (got {discard_ratio})")
    was_training = model.training
    model.eval()
    try:
        attentions = attentions_of(model, pixel_values)
    finally:
        model.train(was_training)
    return rollout_from(attentions, _patch_grid(model, pixel_values), head_fusion, discard_ratio,
                        type(model).__name__)


def rollout_from(attentions: tuple[torch.Tensor, ...], grid: tuple[int, int], head_fusion: str = "mean",
                 discard_ratio: float = 0.9, model_name: str = "the model") -> torch.Tensor:
    """The rollout maps [B, grid_h, grid_w] in [0, 1] from one pass's attentions (see `attention_rollout`)."""
    grid_h, grid_w = grid
    tokens = attentions[0].shape[-1]
    extra = tokens - grid_h * grid_w  # [CLS], plus DeiT's distillation token or registers
    if extra < 1:
        raise PipelineError(f"{model_name} has no [CLS] token to roll attention out from")
    batch = attentions[0].shape[0]
    identity = torch.eye(tokens)
    result = identity.expand(batch, tokens, tokens).clone()
    for attention in attentions:
        attention = attention.float().cpu()
        fused = {"mean": attention.mean(1), "max": attention.amax(1), "min": attention.amin(1)}[head_fusion]
        if discard_ratio > 0:
            flat = fused.reshape(batch, -1)
            drop = int(flat.shape[-1] * discard_ratio)
            if drop:
                lowest = flat.topk(drop, dim=-1, largest=False).indices
                keep_cls = flat[:, 0].clone()
                flat = flat.scatter(1, lowest, 0.0)
                flat[:, 0] = keep_cls
                fused = flat.reshape(batch, tokens, tokens)
        step = (fused + identity) / 2
        step = step / step.sum(dim=-1, keepdim=True)
        result = step @ result
    maps = result[:, 0, extra:].reshape(batch, grid_h, grid_w)
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return ((maps - low) / (high - low).clamp_min(1e-12)).clamp(0.0, 1.0)


def overlay(image: Image.Image, mask, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """The image with the map laid over it as a heat map (the map is resized to the image).

    Args:
        image: the picture (the model's input view of it, ideally: resized and cropped as the processor does).
        mask: [h, w] values in [0, 1] (tensor or array).
        alpha: opacity of the heat map.
    """
    import matplotlib

    values = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rgb = image.convert("RGB")
    resized = Image.fromarray(np.uint8(np.clip(values, 0, 1) * 255)).resize(rgb.size, Image.Resampling.BILINEAR)
    heat = matplotlib.colormaps[colormap](np.asarray(resized) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(rgb, dtype=np.float64) / 255.0 + alpha * heat
    return Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))


def model_view(image, image_processor):
    """(the uint8 picture the model sees, as PIL, and its normalised [1, 3, H, W] pixel_values)."""
    from vit_pipeline.data.decode import decode_rgb
    from vit_pipeline.data.transforms import PixelNormalizer, build_fast_transforms, image_spec

    pixels = build_fast_transforms(image_processor)[1](decode_rgb(image)).contiguous()
    normalized = PixelNormalizer(image_spec(image_processor))(pixels.unsqueeze(0))
    return Image.fromarray(pixels.permute(1, 2, 0).numpy()), normalized


def rollout_images(model, image_processor, images, head_fusion: str = "mean", discard_ratio: float = 0.9):
    """Rollout maps for images (PIL images, file paths or encoded bytes): (the model's view, the rollout overlay,
    predicted label, score) for each."""
    if head_fusion not in HEAD_FUSIONS:
        raise PipelineError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)} (got {head_fusion})")
    if not 0.0 <= discard_ratio < 1.0:
        raise PipelineError(f"discard_ratio must be in [0, 1) (got {discard_ratio})")
    out = []
    for image in images:
        view, pixel_values = model_view(image, image_processor)
        pixel_values = pixel_values.to(next(model.parameters()).device)
        # One pass gives both the scores and the attentions (eager attention: the same logits, to rounding).
        logits, attentions = forward_with_attentions(model, pixel_values)
        # The score pipeline() reports: softmax, or one sigmoid per label for a multi-label model.
        multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
        probs = (logits.float().sigmoid() if multi_label else logits.float().softmax(-1))[0]
        mask = rollout_from(attentions, _patch_grid(model, pixel_values), head_fusion, discard_ratio,
                            type(model).__name__)[0]
        best = int(probs.argmax())
        out.append((view, overlay(view, mask), model.config.id2label[best], float(probs[best])))
    return out
