"""A Gradio page to try an image classifier: drop an image, see the top-k labels, where the model looks, the card's
metrics.

Where it looks: attention rollout for a ViT-family model, Grad-CAM for any other family (`evaluation/cam.py`; Grad-CAM
needs pytorch-grad-cam, the explain extra: without it a CNN's page says so in one line instead of a map).

A multi-label model shows every label's sigmoid score (as `pipeline()` returns them: independent, not summing to 1)
and marks the labels at or above their thresholds (`thresholds.json` saved with the model, else 0.5).

`vit-pipeline demo MODEL` serves it; `vit-pipeline demo MODEL --write_space DIR` copies this file as the Space's
`app.py` (with `MODEL_ID` set to the Hub id) next to `rollout.py` and `cam.py`, so the Space needs no vit-pipeline
install. That is why this module imports nothing from the package at module level, and gradio, torch and
transformers only when a page is built.
"""

from __future__ import annotations

import os
from pathlib import Path

# The model a Space serves: `--write_space` sets this line to the Hub id; `vit-pipeline demo` passes its own.
MODEL_ID = None
TOP_K = 5
DISPLAY_SIZE = 320


def _rollout_module():
    try:
        from vit_pipeline.evaluation import rollout
    except ImportError:  # inside a Space: rollout.py sits next to app.py
        import rollout
    return rollout


def _cam_module():
    try:
        from vit_pipeline.evaluation import cam
    except ImportError:  # inside a Space: cam.py sits next to app.py
        import cam
    return cam


def card_metrics(model_id: str, token: str | None = None) -> tuple[list[tuple[str, float]], str | None]:
    """The evaluation results of the model card (its `model-index`) as [(metric, value)], and the dataset they are on.

    `model_id` is a local folder (its README.md) or a Hub id (the repo's card). A model without a card, or a card
    without results, gives no metrics.
    """
    from huggingface_hub import ModelCard, metadata_load

    try:
        if Path(model_id).is_dir():
            readme = Path(model_id) / "README.md"
            metadata = metadata_load(readme) if readme.is_file() else None
        else:
            metadata = ModelCard.load(model_id, token=token).data.to_dict()
    except Exception:  # no card, or one that does not parse: the page shows none
        return [], None
    metrics, dataset = [], None
    for entry in (metadata or {}).get("model-index") or []:
        for result in entry.get("results") or []:
            dataset = dataset or (result.get("dataset") or {}).get("name")
            for metric in result.get("metrics") or []:
                if isinstance(metric.get("value"), (int, float)):
                    metrics.append((str(metric.get("name") or metric.get("type")), float(metric["value"])))
    return metrics, dataset


def metrics_markdown(metrics: list[tuple[str, float]], dataset: str | None) -> str:
    """The card's metrics as a Markdown table (or a line saying there are none)."""
    if not metrics:
        return "The model card reports no evaluation results."
    where = f" on {dataset}" if dataset else ""
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in metrics)
    return f"**Evaluation results{where}** (from the model card)\n\n| metric | value |\n|---|---|\n{rows}"


def model_thresholds(model_id: str, token: str | None = None) -> dict[str, float]:
    """A multi-label model's per-class thresholds (`thresholds.json` of its folder or Hub repo); {} without one.

    (The page cannot import the package in a Space, hence not `vit_pipeline.evaluation.multilabel.load_thresholds`.)
    """
    import json

    try:
        if Path(model_id).is_dir():
            path = Path(model_id) / "thresholds.json"
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model_id, "thresholds.json", token=token))
        return {str(k): float(v) for k, v in json.loads(path.read_text())["thresholds"].items()}
    except Exception:  # none saved (or unreadable): every label at 0.5
        return {}


class Classifier:
    """`pipeline("image-classification")` on the model, plus where it looks: the map of its family's default method
    (attention rollout for ViTs, Grad-CAM for the rest), for the top-scoring label.

    A multi-label model scores every label (a label outside the top few may still pass its threshold).
    """

    def __init__(self, model_id: str, token: str | None = None, top_k: int = TOP_K):
        from transformers import pipeline

        self.pipe = pipeline("image-classification", model=model_id, token=token)
        config = self.pipe.model.config
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        self.top_k = config.num_labels if self.multi_label else min(top_k, config.num_labels)
        self.thresholds = model_thresholds(model_id, token) if self.multi_label else {}
        self.method = _cam_module().default_method(self.pipe.model)
        self.map_note = None
        self.has_map = self._try_map()

    def _pixel_values(self, image):
        return self.pipe.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"].to(
            self.pipe.model.device, self.pipe.model.dtype)

    def _try_map(self) -> bool:
        # One pass on a blank image: a model its method cannot explain (or Grad-CAM without its library) raises.
        from PIL import Image

        try:
            self.explain(Image.new("RGB", (64, 64)))
        except Exception as err:
            self.map_note = f"No map of where the model looks: {str(err).splitlines()[0]}"
            return False
        return True

    def predict(self, image) -> dict[str, float]:
        """{label: score} of the `top_k` most likely classes, as `pipeline()` scores them (softmax, or a sigmoid per
        label for a multi-label model)."""
        return {p["label"]: float(p["score"]) for p in self.pipe(image.convert("RGB"), top_k=self.top_k)}

    def positives(self, scores: dict[str, float]) -> list[tuple[str, float, float]]:
        """Multi-label: (label, score, threshold) of each label at or above its threshold, best first."""
        cut = {label: self.thresholds.get(label, 0.5) for label in scores}
        return [(label, score, cut[label]) for label, score in scores.items() if score >= cut[label]]

    def positives_markdown(self, scores: dict[str, float]) -> str:
        """The labels the thresholds give, as the page shows them (multi-label models)."""
        source = "thresholds.json" if self.thresholds else "0.5: the model has no thresholds.json"
        found = self.positives(scores)
        shown = ", ".join(f"**{label}** {score:.3f} (>= {cut:.3f})" for label, score, cut in found)
        return f"Labels at or above their threshold ({source}): {shown or 'none'}"

    def explain(self, image):
        """The image as the model sees it (resized and cropped), with the map of `self.method` laid over it (for the
        top-scoring label)."""
        import torch

        pixel_values = self._pixel_values(image)
        with torch.no_grad():
            top = int(self.pipe.model(pixel_values=pixel_values).logits[0].argmax())
        mask = _cam_module().explanation_maps(self.pipe.model, pixel_values, self.method, [top])[0]
        height, width = pixel_values.shape[-2:]
        # Shown at least DISPLAY_SIZE pixels wide: a 224 px model input is small on a page, a 32 px one invisible.
        scale = max(1, -(-DISPLAY_SIZE // max(height, width)))
        view = self._model_view(pixel_values[0]).resize((width * scale, height * scale), resample=3)  # bicubic
        return _rollout_module().overlay(view, mask)

    def _model_view(self, pixel_values):
        """The model's input as a picture: the processor's normalisation undone (its resize and crop kept)."""
        import numpy as np
        from PIL import Image

        processor = self.pipe.image_processor
        array = pixel_values.float().cpu().numpy().transpose(1, 2, 0)
        if getattr(processor, "do_normalize", False):
            array = array * np.asarray(processor.image_std) + np.asarray(processor.image_mean)
        scale = getattr(processor, "rescale_factor", 1 / 255) if getattr(processor, "do_rescale", False) else 1.0
        return Image.fromarray(np.uint8(np.clip(array / scale, 0, 255).round()))


def build_demo(model_id: str, token: str | None = None, top_k: int = TOP_K, title: str | None = None):
    """The Gradio page for `model_id` (an output folder or a Hub id): a `gradio.Blocks`, not yet launched."""
    import gradio as gr

    classifier = Classifier(model_id, token=token, top_k=top_k)
    metrics, dataset = card_metrics(model_id, token=token)
    labels = list(classifier.pipe.model.config.id2label.values())
    name = title or (Path(model_id).name if Path(model_id).is_dir() else model_id)

    def classify(image):
        if image is None:
            return None, None, ""
        shown = classifier.explain(image) if classifier.has_map else None
        scores = classifier.predict(image)
        return scores, shown, classifier.positives_markdown(scores) if classifier.multi_label else ""

    with gr.Blocks(title=name) as demo:
        gr.Markdown(f"# {name}\n\nDrop an image to classify it ({len(labels)} classes"
                    f"{', multi-label' if classifier.multi_label else ''}: "
                    f"{', '.join(map(str, labels[:12]))}{', ...' if len(labels) > 12 else ''}).")
        with gr.Row():
            image = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"], elem_id="input-image")
            title = "Attention rollout" if classifier.method == "rollout" else "Grad-CAM"
            attention = gr.Image(type="pil", label=f"{title} (where the model looks)", interactive=False,
                                 visible=classifier.has_map, elem_id="attention-map")
            prediction = gr.Label(num_top_classes=classifier.top_k, elem_id="prediction",
                                  label="Scores (one sigmoid per label: they need not sum to 1)"
                                  if classifier.multi_label else "Prediction")
        positives = gr.Markdown(visible=classifier.multi_label, elem_id="positive-labels")
        if classifier.map_note:
            gr.Markdown(classifier.map_note, elem_id="map-note")
        gr.Markdown(metrics_markdown(metrics, dataset), elem_id="card-metrics")
        image.change(classify, inputs=image, outputs=[prediction, attention, positives])
    return demo


if __name__ == "__main__":
    # In a Space (`python app.py`): serve on the Space's port.
    build_demo(os.environ.get("MODEL_ID", MODEL_ID), token=os.environ.get("HF_TOKEN"),
               top_k=int(os.environ.get("TOP_K", TOP_K))).launch()
