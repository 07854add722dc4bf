"""Fine-tune at a higher (or lower) resolution than the checkpoint's: resize the position embeddings once, update
the config and the image processor, so the saved model runs natively at the new size in `pipeline()`.

The interpolation is the one `ViTEmbeddings.interpolate_pos_encoding` does on the fly (bicubic on the patch grid,
extra tokens such as [CLS] kept as they are), done once on the weights instead of at every forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from vit_pipeline import PipelineError


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def resize_position_embeddings(model: nn.Module, image_size: int) -> bool:
    """Resize a ViT-family model's position embeddings to `image_size` x `image_size` inputs (CNNs and Swin: nothing
    to resize, only `config.image_size` follows).

    Returns:
        False when the model is already at that size (nothing changed), True otherwise.

    Raises:
        PipelineError: the size is not a multiple of the patch size, or the model has no ViT-style embeddings.
    """
    from vit_pipeline.model.inspect import CONVOLUTIONAL, backbone, base_model

    config = base_model(model).config
    if config.model_type in CONVOLUTIONAL or config.model_type in ("swin", "swinv2"):
        # Convolutions with global pooling (and Swin's windows, padded as needed) take any size: no weight changes.
        if hasattr(config, "image_size"):
            config.image_size = image_size
        return False
    embeddings = getattr(backbone(model), "embeddings", None)
    patches = getattr(embeddings, "patch_embeddings", None)
    position = getattr(embeddings, "position_embeddings", None)
    if patches is None or not isinstance(position, nn.Parameter):
        raise PipelineError(f"image_size is supported for ViT-style models with learned position embeddings and for "
                            f"CNNs, not {type(model).__name__} ({config.model_type}): remove image_size")
    patch_h, patch_w = _pair(patches.patch_size)
    if image_size % patch_h or image_size % patch_w:
        raise PipelineError(f"image_size {image_size} is not a multiple of the patch size {patch_h}: use "
                            f"{image_size // patch_h * patch_h} or {(image_size // patch_h + 1) * patch_h}")
    old_h, old_w = _pair(patches.image_size)
    grid_h, grid_w = old_h // patch_h, old_w // patch_w
    new_h, new_w = image_size // patch_h, image_size // patch_w
    if (new_h, new_w) == (grid_h, grid_w):
        return False
    extra = position.shape[1] - grid_h * grid_w  # [CLS] (and a distillation token for DeiT)
    dim = position.shape[-1]
    with torch.no_grad():
        grid = position[:, extra:].reshape(1, grid_h, grid_w, dim).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid.float(), size=(new_h, new_w), mode="bicubic", align_corners=False)
        grid = grid.to(position.dtype).permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim)
        resized = torch.cat([position[:, :extra], grid], dim=1)
    embeddings.position_embeddings = nn.Parameter(resized, requires_grad=position.requires_grad)
    patches.image_size = (image_size, image_size)
    patches.num_patches = new_h * new_w
    if hasattr(embeddings, "image_size"):
        embeddings.image_size = (image_size, image_size)
    model.config.image_size = image_size
    return True


def set_processor_size(image_processor, image_size: int) -> None:
    """Make the image processor produce `image_size` x `image_size` inputs (saved with the model, used by pipeline()).

    A processor that resizes then center-crops keeps its resize-to-crop ratio.
    """
    size = image_processor.size
    get = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    crop = getattr(image_processor, "crop_size", None) if getattr(image_processor, "do_center_crop", False) else None
    if crop is not None:
        crop_get = crop.get if isinstance(crop, dict) else (lambda key: getattr(crop, key, None))
        crop_h = crop_get("height") or crop_get("shortest_edge")
        if get("shortest_edge"):
            image_processor.size = {"shortest_edge": round(get("shortest_edge") * image_size / crop_h)}
        else:
            image_processor.size = {"height": round(get("height") * image_size / crop_h),
                                    "width": round(get("width") * image_size / crop_h)}
        image_processor.crop_size = {"height": image_size, "width": image_size}
    elif get("shortest_edge") and not get("height"):
        image_processor.size = {"shortest_edge": image_size}
    else:
        image_processor.size = {"height": image_size, "width": image_size}
