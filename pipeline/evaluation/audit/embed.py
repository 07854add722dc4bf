"""Embed every image once with a model, batched, through the pipeline's own inference path (`inference.batches`:
the eval transforms of the model's image processor, on the GPU in bf16 when there is one)."""

from __future__ import annotations

import numpy as np
import torch

from vit_pipeline import PipelineError
from vit_pipeline.evaluation.inference import _autocast, batches, default_device


class _HeadInput:
    """Forward pre-hook on the classification head: keeps what the head receives (the pooled, pre-logit features)."""

    def __init__(self):
        self.features = None

    def __call__(self, module, args):
        self.features = args[0].detach().flatten(1).float()


@torch.no_grad()
def embed_images(model, dataset, image_processor, batch_size: int = 64, device=None, progress: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The embedding and the logits of every image of `dataset` (canonical `image` column).

    The embedding is the input of the model's classification head (`model.classifier`: the pooled CLS token of a
    ViT, the pooled feature map of a CNN); `centre_and_normalise` prepares it for the neighbour search.

    Returns:
        (embeddings float32 [n, d], logits float32 [n, num_labels]).
    """
    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Module):
        raise PipelineError(f"{type(model).__name__} has no `classifier` head whose input the audit could take as "
                            "the embedding: use a transformers image classifier (ViT, DeiT, BEiT, Swin, DINOv2, "
                            "ConvNeXt, ResNet, EfficientNet)")
    device = torch.device(device) if device is not None else default_device()
    model = model.to(device).eval()
    hook = _HeadInput()
    handle = head.register_forward_pre_hook(hook)
    features, logits = [], []
    try:
        for pixel_values, _ in batches(dataset, image_processor, batch_size, device, progress):
            with _autocast(device):
                out = model(pixel_values=pixel_values).logits
            features.append(hook.features.cpu().numpy())
            logits.append(out.float().cpu().numpy())
    finally:
        handle.remove()
    return np.concatenate(features).astype(np.float32), np.concatenate(logits).astype(np.float32)


def centre_and_normalise(features: np.ndarray) -> np.ndarray:
    """The embeddings minus their mean, L2-normalised (in place, float32): a dot product is then the cosine
    similarity, and features that every image shares (a CNN's non-negative pooled activations) no longer make all
    images look alike."""
    features -= features.mean(axis=0, keepdims=True)
    features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return features
