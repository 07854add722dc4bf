"""`vit-pipeline demo`: the Gradio page driven in a real headless Chromium, the Space it writes, and its errors.

The model is a tiny random ViT with the photo classes, saved with a real model card (vit_pipeline.publish.card), so the
page has labels, scores, an attention map and metrics to show (a ConvNeXt stand-in: a Grad-CAM map).
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO, TINY_VIT
from tests.docs_blocks import commands
from vit_pipeline import PipelineError

LABELS = ["astronaut", "chelsea", "coffee"]
CARD_METRICS = {"accuracy": 0.8125, "f1": 0.75}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def save_demo_model(path: Path, vit: bool = True) -> Path:
    """A tiny random classifier over LABELS (ViT, or a ConvNeXt CNN) with its processor and a model card."""
    import torch
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    from vit_pipeline.publish.card import write_card
    from vit_pipeline.publish.card_inputs import CardInputs

    torch.manual_seed(0)
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {name: i for i, name in enumerate(LABELS)}}
    if vit:
        model = ViTForImageClassification(ViTConfig(**TINY_VIT, num_labels=len(LABELS), **labels))
    else:
        model = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                              num_labels=len(LABELS), **labels))
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    write_card(CardInputs(model_name=path.name, model_source="tiny", from_scratch=True,
                          architecture=type(model).__name__, labels=LABELS, eval_metrics=CARD_METRICS,
                          eval_split="test", train_samples=36, eval_samples=12, dataset_id=None,
                          dataset_display="scikit-image photos"), path)
    return path


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    return save_demo_model(tmp_path_factory.mktemp("demo-model"))


@pytest.fixture(scope="module")
def cat_photo(tmp_path_factory) -> Path:
    """A real photo (scikit-image's Chelsea the cat) as a PNG file to upload."""
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the demo exited with {process.returncode}: {process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the demo did not answer on {url} within {timeout:.0f} s")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or next(
        (p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium") if Path(p).is_file()), None)


@pytest.mark.slow
def test_page_in_headless_chromium_predicts_what_pipeline_predicts(demo_model, cat_photo, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright
    from transformers import pipeline

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"}
    # The command the README and the demo page show, on this test's model, on a free port.
    [argv] = commands("README.md", "test_page_in_headless_chromium_predicts_what_pipeline_predicts")
    assert commands("docs/commands/demo.md", "test_page_in_headless_chromium_predicts_what_pipeline_predicts") == [argv]
    argv = [str(demo_model) if word == "outputs/quickstart" else word for word in argv]
    process = subprocess.Popen([sys.executable, "-m", "vit_pipeline", *argv, "--port", str(port), "--top_k", "2"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, process)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 900})
            try:
                page = browser.new_page()
                page.goto(url)
                page.set_input_files("#input-image input[type=file]", str(cat_photo))
                page.wait_for_selector("#prediction [data-testid=label-output-value]", timeout=120_000)
                page.wait_for_selector("#attention-map img", timeout=60_000)
                shown_label = page.inner_text("#prediction [data-testid=label-output-value]").strip()
                # The score bars: one per label shown (top_k), each with the exact score as its value.
                bars = page.locator("#prediction meter")
                shown = {bars.nth(i).get_attribute("aria-label"): float(bars.nth(i).get_attribute("value"))
                         for i in range(bars.count())}
                metrics_text = page.inner_text("#card-metrics")
                page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            finally:
                browser.close()
    finally:
        process.terminate()
        console, _ = process.communicate(timeout=30)
    # Served on this machine only, by default.
    assert f"Running on local URL:  http://127.0.0.1:{port}" in console

    expected = pipeline("image-classification", model=str(demo_model))(Image.open(cat_photo).convert("RGB"), top_k=2)
    assert shown_label == expected[0]["label"]
    assert shown == pytest.approx({p["label"]: p["score"] for p in expected}, abs=1e-5)
    assert "0.8125" in metrics_text and "0.7500" in metrics_text and "scikit-image photos" in metrics_text
    assert (tmp_path / "demo.png").stat().st_size > 10_000


@pytest.mark.slow
def test_classifier_scores_as_pipeline_and_maps_every_family(demo_model, cat_photo, tmp_path, monkeypatch):
    from transformers import pipeline

    from vit_pipeline.publish.space_app import Classifier, card_metrics, metrics_markdown

    image = Image.open(cat_photo)
    classifier = Classifier(str(demo_model), top_k=10)
    assert classifier.top_k == len(LABELS) and classifier.has_map and classifier.method == "rollout"
    expected = pipeline("image-classification", model=str(demo_model))(image.convert("RGB"), top_k=3)
    assert classifier.predict(image) == pytest.approx({p["label"]: p["score"] for p in expected})
    view = classifier.explain(image)
    assert view.mode == "RGB" and min(view.size) >= 320
    metrics, dataset = card_metrics(str(demo_model))
    assert dict(metrics) == {"Accuracy": 0.8125, "F1": 0.75} and dataset == "scikit-image photos"
    assert "| Accuracy | 0.8125 |" in metrics_markdown(metrics, dataset)
    # A CNN: its Grad-CAM map; without pytorch-grad-cam (the explain extra), a one-line note instead.
    cnn = Classifier(str(save_demo_model(tmp_path / "cnn", vit=False)))
    assert cnn.has_map and cnn.method == "gradcam" and set(cnn.predict(image)) <= set(LABELS)
    assert cnn.map_note is None and min(cnn.explain(image).size) >= 320
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    bare = Classifier(str(tmp_path / "cnn"))
    assert not bare.has_map and bare.map_note == ("No map of where the model looks: --method gradcam needs "
                                                  "pytorch-grad-cam, the explain extra: pip install "
                                                  "'vit-pipeline[explain]'")
    assert card_metrics(str(tmp_path)) == ([], None)


def test_multilabel_classifier_shows_every_sigmoid_score_and_marks_the_labels_above_the_thresholds(cat_photo,
                                                                                                       tmp_path):
    import json

    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, pipeline

    from vit_pipeline.publish.space_app import Classifier

    torch.manual_seed(0)
    names = [f"tag{i}" for i in range(7)]  # more than the default top_k of 5
    ViTForImageClassification(ViTConfig(**TINY_VIT, num_labels=len(names), id2label=dict(enumerate(names)),
                                        label2id={n: i for i, n in enumerate(names)},
                                        problem_type="multi_label_classification")).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    image = Image.open(cat_photo)
    expected = {p["label"]: p["score"] for p in pipeline("image-classification", model=str(tmp_path))(
        image.convert("RGB"), top_k=len(names))}
    # Thresholds that put the two best labels above and every other one below.
    ranked = sorted(expected, key=expected.get, reverse=True)
    cut = {n: expected[n] - 1e-4 if n in ranked[:2] else min(expected[n] + 1e-4, 1.0) for n in names}
    (tmp_path / "thresholds.json").write_text(json.dumps({"thresholds": cut, "tuned_on": "validation"}))

    classifier = Classifier(str(tmp_path), top_k=5)
    assert classifier.multi_label and classifier.top_k == len(names)
    scores = classifier.predict(image)
    assert scores == pytest.approx(expected, abs=1e-6) and abs(sum(scores.values()) - 1.0) > 0.05
    assert [label for label, _, _ in classifier.positives(scores)] == ranked[:2]
    text = classifier.positives_markdown(scores)
    assert text.startswith("Labels at or above their threshold (thresholds.json): ")
    assert f"**{ranked[0]}** {expected[ranked[0]]:.3f}" in text and ranked[2] not in text
    # No thresholds.json: 0.5 for every label, said on the page.
    (tmp_path / "thresholds.json").unlink()
    plain = Classifier(str(tmp_path))
    assert [label for label, _, _ in plain.positives(scores)] == [n for n in ranked if expected[n] >= 0.5]
    assert "(0.5: the model has no thresholds.json)" in plain.positives_markdown(scores)


@pytest.mark.slow
def test_write_space_serves_the_hub_model_without_the_package(demo_model, cat_photo, tmp_path, hub_server):
    from huggingface_hub import HfApi, metadata_load

    from vit_pipeline.commands.demo import main

    # The model is on the Hub (the stand-in): the Space loads it by its id, card included.
    api = HfApi()
    api.create_repo("org/tiny-photos", token="hf_good")
    api.upload_folder(folder_path=str(demo_model), repo_id="org/tiny-photos", token="hf_good")
    space = tmp_path / "space"
    main(["org/tiny-photos", "--write_space", str(space), "--top_k", "2"])
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "cam.py", "requirements.txt",
                                                       "rollout.py"]
    meta = metadata_load(space / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == ["org/tiny-photos"]
    app = (space / "app.py").read_text()
    assert "MODEL_ID = 'org/tiny-photos'" in app and "TOP_K = 2" in app
    requirements = (space / "requirements.txt").read_text().split()
    assert any(r.startswith("transformers") for r in requirements) and "torch" in requirements
    assert any(r.startswith("grad-cam>=") for r in requirements)
    # The Space's own files run from its folder, with vit-pipeline unimportable (the venv may hold it: a None
    # sys.modules entry blocks it, as its absence does in a Space): the Hub model's scores, map and card metrics.
    script = ("import sys; sys.modules['vit_pipeline'] = None; import os, app; from PIL import Image; "
              "c = app.Classifier(app.MODEL_ID, top_k=app.TOP_K); image = Image.open(sys.argv[1]); "
              "assert os.path.dirname(os.path.abspath(app._rollout_module().__file__)) == os.getcwd(); "
              "assert os.path.dirname(os.path.abspath(app._cam_module().__file__)) == os.getcwd(); "
              "print(repr((c.predict(image), c.has_map, c.explain(image).size, app.card_metrics(app.MODEL_ID))))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script, str(cat_photo)], cwd=space, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scores, has_rollout, size, (metrics, dataset) = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    from transformers import pipeline

    expected = pipeline("image-classification", model=str(demo_model))(Image.open(cat_photo).convert("RGB"), top_k=2)
    assert scores == pytest.approx({p["label"]: p["score"] for p in expected}, abs=1e-6)
    assert has_rollout and min(size) >= 320
    assert dict(metrics) == {"Accuracy": 0.8125, "F1": 0.75} and dataset == "scikit-image photos"


@pytest.mark.parametrize("argv, message", [
    (["missing/folder/x"], "no model 'missing/folder/x'"),
    (["missing-folder"], "cannot load model 'missing-folder': "),  # a legacy Hub id, offline here
    ([".", "--top_k", "0"], "--top_k must be at least 1"),
    ([".", "--port", "70000"], "--port must be in 1-65535"),
    ([".", "--write_space", "space"], "names no pushed repo"),
    (["not a hub id", "--write_space", "space"], "give its id ORG/NAME"),
])
@pytest.mark.slow
def test_demo_errors_are_one_line(argv, message, tmp_path, monkeypatch):
    from vit_pipeline.commands.demo import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=message):
        main(argv)


def test_demo_without_gradio_names_the_demo_extra(demo_model, monkeypatch):
    from vit_pipeline.commands.demo import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed
    with pytest.raises(PipelineError, match=r"needs the demo extra: pip install 'vit-pipeline\[demo\]'"):
        main([str(demo_model)])
