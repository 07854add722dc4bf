"""Explanations of images, for the explain command, the training card and compare: maps, overlays, faithfulness.

`explain_images` runs one method (`evaluation.cam`: rollout or a pytorch-grad-cam method) over images as the model
sees them; `faithfulness.faithfulness` scores the maps. A training run keeps the maps of eight eval images
(`explain_run`: the card's figure, `explain_report.json`, `explanations.npz`); compare lays those of each model side by
side (`write_explanation_grid`) and tables their faithfulness (`faithfulness_markdown`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vit_pipeline import PipelineError

logger = logging.getLogger(__name__)

REPORT_JSON = "explain_report.json"
MAPS_NPZ = "explanations.npz"
CARD_PNG = "explanation_maps.png"
RUN_IMAGES = 8  # eval images a training run explains (compare shows all, the card the first CARD_IMAGES)
CARD_IMAGES = 4
METHOD_TITLES = {"rollout": "Attention rollout (Abnar & Zuidema 2020)", "gradcam": "Grad-CAM (Selvaraju et al. 2017)",
                 "gradcam++": "Grad-CAM++ (Chattopadhyay et al. 2018)", "xgradcam": "XGrad-CAM (Fu et al. 2020)",
                 "hirescam": "HiResCAM (Draelos & Carin 2020)", "layercam": "LayerCAM (Jiang et al. 2021)",
                 "eigencam": "Eigen-CAM (Muhammad & Yeasin 2020)", "eigengradcam": "Eigen-Grad-CAM",
                 "scorecam": "Score-CAM (Wang et al. 2020)"}


def method_name(method: str) -> str:
    """The method as a figure names it: "Attention rollout", "Grad-CAM", ... (its title without the citation)."""
    return METHOD_TITLES.get(method, method).split(" (")[0]


@dataclass
class Explained:
    """One image explained: the model's view of it, the map laid over it, the class explained and its score."""

    view: Any  # PIL image: resized and cropped as the image processor does
    overlay: Any  # PIL image
    saliency: np.ndarray  # [H, W] in [0, 1], the model's input size
    target: int
    label: str
    score: float
    pixel_values: Any  # [1, 3, H, W] normalised


def target_index(model, label: str | None) -> int | None:
    """The class id of `--target LABEL` (None: each image's predicted class).

    Raises:
        PipelineError: the model has no such label.
    """
    if label is None:
        return None
    names = {str(v): int(k) for k, v in model.config.id2label.items()}
    if label not in names:
        shown = ", ".join(list(names)[:10]) + (", ..." if len(names) > 10 else "")
        raise PipelineError(f"--target {label} is not a label of the model ({shown})")
    return names[label]


def explain_images(model, image_processor, images, method: str, target: int | None = None,
                   head_fusion: str = "mean", discard_ratio: float = 0.9) -> list[Explained]:
    """Explain each image (PIL image, file path or encoded bytes) with `method`, for class `target` or the
    predicted (top-scoring) one (head_fusion, discard_ratio: rollout's options).

    Raises:
        PipelineError: the method does not apply to the model, or its library (the explain extra) is missing.
    """
    import torch

    from vit_pipeline.evaluation.cam import check_method, explanation_maps
    from vit_pipeline.evaluation.rollout import model_view, overlay
    from vit_pipeline.model.inspect import is_multi_label

    check_method(model, method)
    device = next(model.parameters()).device
    out = []
    for image in images:
        view, pixel_values = model_view(image, image_processor)
        pixel_values = pixel_values.to(device)
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits.float()[0]
        # The score pipeline() reports: softmax, or one sigmoid per label for a multi-label model.
        probs = logits.sigmoid() if is_multi_label(model) else logits.softmax(-1)
        chosen = int(probs.argmax()) if target is None else target
        saliency = explanation_maps(model, pixel_values, method, [chosen], head_fusion, discard_ratio)[0]
        out.append(Explained(view, overlay(view, saliency), saliency, chosen, model.config.id2label[chosen],
                             float(probs[chosen]), pixel_values))
    return out


def score_explanations(model, items: list[Explained], seed: int = 0) -> list[dict[str, float]]:
    """Deletion and insertion AUC of each item's map and of a random map (see `evaluation.faithfulness`)."""
    from vit_pipeline.evaluation.faithfulness import faithfulness
    from vit_pipeline.model.inspect import is_multi_label

    rows = []
    for i, item in enumerate(items):
        rows += faithfulness(model, item.pixel_values, item.saliency[None], [item.target], seed=seed + i,
                             multi_label=is_multi_label(model))
    return rows


def write_report(path: Path, *, model: str, method: str, names: list[str], items: list[Explained],
                 scores: list[dict] | None) -> dict:
    """`explain_report.json`: the method, each image's class and score (and AUCs), and the mean AUCs."""
    from vit_pipeline.evaluation.faithfulness import summarize

    images = [{"image": name, "label": item.label, "score": item.score, **(row or {})}
              for name, item, row in zip(names, items, scores or [None] * len(items), strict=True)]
    report = {"model": model, "method": method, "method_title": METHOD_TITLES.get(method, method),
              "images": images, "faithfulness": summarize(scores) if scores else None}
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def explain_run(model, image_processor, dataset, rows: list[int], captions: list[str], out_dir: Path,
                model_name: str) -> dict[str, Any]:
    """A training run's explanations: the default method over eval `rows`, scored; the card's figure (the first
    CARD_IMAGES), `explain_report.json` and `explanations.npz` (views and maps, what compare lays side by side).

    Returns:
        `explanation` (the figure's file name, or None), `explanation_method` (its title), `faithfulness` (the mean
        AUCs) and `explanation_note` (why there are no maps, or None).
    """
    from vit_pipeline.evaluation.cam import EXTRA, ExtraMissing, default_method
    from vit_pipeline.evaluation.plots import plot_rollouts

    method = default_method(model)
    none = {"explanation": None, "explanation_method": None, "faithfulness": None, "explanation_note": None}
    try:
        items = explain_images(model, image_processor, [dataset[i]["image"] for i in rows], method)
    except PipelineError as err:
        logger.info("No explanation maps for the card: %s", err)
        if isinstance(err, ExtraMissing):  # a CNN without pytorch-grad-cam: said on the card
            none["explanation_note"] = (f"No explanation maps: Grad-CAM for {type(model).__name__} needs the "
                                        f"explain extra ({EXTRA}).")
        return none
    scores = score_explanations(model, items)
    report = write_report(out_dir / REPORT_JSON, model=model_name, method=method,
                          names=[f"row {i}" for i in rows], items=items, scores=scores)
    captions = [f"{caption} {item.label} ({item.score:.2f})" for caption, item in zip(captions, items, strict=True)]
    np.savez_compressed(out_dir / MAPS_NPZ, views=np.stack([np.asarray(item.view) for item in items]),
                        maps=np.stack([item.saliency for item in items]).astype(np.float16),
                        rows=np.asarray(rows), captions=np.asarray(captions), method=np.asarray(method))
    title = METHOD_TITLES.get(method, method)
    figure = plot_rollouts([(item.view, item.overlay, caption) for item, caption in
                            list(zip(items, captions, strict=True))[:CARD_IMAGES]], out_dir / CARD_PNG,
                           map_title=method_name(method))
    return {"explanation": figure.name, "explanation_method": title, "faithfulness": report["faithfulness"],
            "explanation_note": None}


def _load_run(folder: Path) -> tuple[dict | None, dict | None]:
    report = json.loads((folder / REPORT_JSON).read_text()) if (folder / REPORT_JSON).is_file() else None
    maps = dict(np.load(folder / MAPS_NPZ)) if (folder / MAPS_NPZ).is_file() else None
    return report, maps


def write_explanation_grid(folders: list[Path], names: list[str], path: Path) -> Path:
    """compare's `explanations.png`: the same eval images (rows) explained by each model (one column per model),
    from each run's `explanations.npz`. A run without maps gets an empty column that says so."""
    from PIL import Image

    from vit_pipeline.evaluation.plots import pyplot, save_figure
    from vit_pipeline.evaluation.rollout import overlay

    runs = [_load_run(folder)[1] for folder in folders]
    count = max([len(run["rows"]) for run in runs if run is not None] or [1])
    plt = pyplot()
    fig, axes = plt.subplots(count, len(folders), figsize=(2.6 * len(folders), 2.6 * count), squeeze=False)
    for column, (name, run) in enumerate(zip(names, runs, strict=True)):
        for row in range(count):
            ax = axes[row][column]
            ax.axis("off")
            if run is None or row >= len(run["rows"]):
                if row == 0:
                    ax.set_title(f"{name}\nno explanation maps", fontsize=8)
                continue
            ax.imshow(overlay(Image.fromarray(run["views"][row]), run["maps"][row].astype(np.float32)))
            caption = str(run["captions"][row])
            ax.set_title(f"{name} ({run['method']})\n{caption}" if row == 0 else caption, fontsize=7)
    return save_figure(fig, path)


def faithfulness_markdown(folders: list[Path], names: list[str]) -> str:
    """compare's faithfulness table: each model's method and mean deletion / insertion AUC beside the random map's."""
    lines = ["## Explanations", "",
             "The same eval images explained by each model (`explanations.png`: one column per model, the default "
             "method: attention rollout for ViTs, Grad-CAM for the rest). Faithfulness (Petsiuk et al. 2018): the "
             "area under the class probability as the most salient pixels are deleted (lower is better) or inserted "
             "into a blurred image (higher is better), beside a random map's.", "",
             "| model | method | images | deletion AUC | random deletion AUC | insertion AUC | random insertion AUC |",
             "|---|---|---|---|---|---|---|"]
    for folder, name in zip(folders, names, strict=True):
        report = _load_run(folder)[0]
        summary = (report or {}).get("faithfulness")
        if not summary:
            lines.append(f"| `{name}` | - | - | - | - | - | - |")
            continue
        lines.append(f"| `{name}` | {report['method']} | {summary['images']} | {summary['deletion_auc']:.3f} | "
                     f"{summary['random_deletion_auc']:.3f} | {summary['insertion_auc']:.3f} | "
                     f"{summary['random_insertion_auc']:.3f} |")
    return "\n".join(lines) + "\n"


def write_compare_explanations(output: Path, folders: list[str]) -> None:
    """compare's explanation outputs: `explanations.png` and the faithfulness section appended to comparison.md."""
    paths = [output / folder for folder in folders]
    write_explanation_grid(paths, folders, output / "explanations.png")
    with (output / "comparison.md").open("a") as file:
        file.write("\n" + faithfulness_markdown(paths, folders))
