"""Is an explanation map faithful? Deletion and insertion curves (Petsiuk et al. 2018, "RISE", section 4.1).

Deletion: the pixels are removed (set to 0 in the normalised input, RISE's substrate), most salient first, and the
class probability is read after each step; a faithful map makes it fall fast, so a low area under the curve (AUC) is
good. Insertion: the pixels are put back, most salient first, into a blurred copy of the image (RISE's Gaussian
kernel: 11 pixels, sigma 5); a high AUC is good. A random map is the baseline: a map that knows nothing about the
model scores about as a random one does.

Written here: pytorch-grad-cam's metrics (ROAD, CamMultImageConfidenceChange, the perturbation confidence at a few
percentiles) give confidence changes at fixed thresholds, not the deletion and insertion curves and their AUC.
"""

from __future__ import annotations

import numpy as np
import torch

STEPS = 16  # points on each curve after the first: the pixels go in 16 equal shares
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion substrate
RANDOM_GRID = 8  # a random map's cells are 8 x 8 input pixels: about as smooth as a patch or CNN-stage map


def random_maps(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """`count` random maps [count, H, W] in [0, 1]: uniform noise on cells of RANDOM_GRID pixels, upsampled."""
    height, width = size
    generator = torch.Generator().manual_seed(seed)
    cells = torch.rand(count, 1, max(1, height // RANDOM_GRID), max(1, width // RANDOM_GRID), generator=generator)
    return torch.nn.functional.interpolate(cells, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def _scores(model, batch: torch.Tensor, target: int, multi_label: bool, batch_size: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            logits = model(pixel_values=batch[start:start + batch_size]).logits.float()
            probs = logits.sigmoid() if multi_label else logits.softmax(-1)
            out.append(probs[:, target].cpu())
    return torch.cat(out).numpy()


def curves(model, pixel_values: torch.Tensor, saliency: np.ndarray, target: int, *, steps: int = STEPS,
           multi_label: bool = False, batch_size: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """The deletion and insertion curves of one image under each of K maps: the class probability at 0, 1/steps,
    ..., 1 of the pixels, the most salient first.

    Args:
        model: the classifier (a transformers image classifier: `pixel_values` in, `.logits` out), in eval mode.
        pixel_values: [1, 3, H, W], normalised as the model's image processor does.
        saliency: [K, H, W] (or one [H, W] map), higher = more important.
        target: the class whose probability is read (softmax, or its sigmoid for a multi-label model).
        batch_size: perturbed images per forward pass (the default: one image's two curves under two maps).

    Returns:
        (deletion, insertion), each [K, steps + 1] probabilities.
    """
    from torchvision.transforms.functional import gaussian_blur

    image = pixel_values[0]
    height, width = image.shape[-2:]
    maps = np.asarray(saliency, dtype=np.float64).reshape(-1, height * width)
    order = torch.from_numpy(np.argsort(-maps, axis=1, kind="stable").copy())
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(height * width).expand_as(order).contiguous())
    counts = torch.linspace(0, height * width, steps + 1).round().long()
    # masks[k, s]: the s/steps most salient pixels of map k.
    masks = (rank.view(-1, 1, 1, height, width) < counts.view(1, -1, 1, 1, 1)).flatten(0, 1).to(image.device)
    blurred = gaussian_blur(image.unsqueeze(0), [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])[0]
    batch = torch.cat([torch.where(masks, torch.zeros_like(image), image), torch.where(masks, image, blurred)])
    scores = _scores(model, batch, target, multi_label, batch_size).reshape(2, len(maps), steps + 1)
    return scores[0], scores[1]


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoids)."""
    curve = np.asarray(curve, dtype=np.float64)
    return float(((curve[1:] + curve[:-1]) / 2).sum() / (len(curve) - 1))


def faithfulness(model, pixel_values: torch.Tensor, maps: np.ndarray, targets: list[int], *, seed: int = 0,
                 multi_label: bool = False, steps: int = STEPS) -> list[dict[str, float]]:
    """Deletion and insertion AUC of each image's map and of a random map (the baseline).

    Args:
        pixel_values: [B, 3, H, W] normalised inputs; maps: [B, H, W]; targets: the class explained in each image.
        seed: seeds the random maps (image i gets the i-th).

    Returns:
        One dict per image: deletion_auc, insertion_auc, random_deletion_auc, random_insertion_auc.
    """
    was_training = model.training
    model.eval()
    baseline = random_maps(len(maps), tuple(pixel_values.shape[-2:]), seed)
    rows = []
    try:
        for i, target in enumerate(targets):
            # One batch: both curves under the map and under the random map.
            deletion, insertion = curves(model, pixel_values[i:i + 1], np.stack([maps[i], baseline[i]]), target,
                                         steps=steps, multi_label=multi_label)
            rows.append({"deletion_auc": auc(deletion[0]), "insertion_auc": auc(insertion[0]),
                         "random_deletion_auc": auc(deletion[1]), "random_insertion_auc": auc(insertion[1])})
    finally:
        model.train(was_training)
    return rows


def summarize(rows: list[dict[str, float]]) -> dict[str, float | int]:
    """The mean of each AUC over the images, with their count and the number of curve steps."""
    keys = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")
    return {**{key: float(np.mean([r[key] for r in rows])) for key in keys}, "images": len(rows), "steps": STEPS}


def summary_line(method: str, summary: dict) -> str:
    """One line: the method's mean deletion / insertion AUC beside the random map's."""
    return (f"{method} on {summary['images']} image(s): deletion AUC {summary['deletion_auc']:.3f} (random map "
            f"{summary['random_deletion_auc']:.3f}; lower is more faithful), insertion AUC "
            f"{summary['insertion_auc']:.3f} (random map {summary['random_insertion_auc']:.3f}; higher is more "
            "faithful)")
