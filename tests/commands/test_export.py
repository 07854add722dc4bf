"""`vit-pipeline export`: ONNX logits match PyTorch on real photos, dynamic quantization reports its accuracy
change, a model fine-tuned at a higher resolution exports too; bad inputs give one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import PHOTO_NAMES, photos, run_cli, save_tiny_classifier
from vit_pipeline.cli import main

# fp32 ONNX Runtime vs fp32 PyTorch on the same pixels: kernels differ in summation order only.
ATOL = 1e-4


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
        raise SystemExit(0)
    return exit_info.value.code


@pytest.fixture(scope="module")
def photo_classifier(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("photo-classifier"), sorted(PHOTO_NAMES))


def onnx_vs_torch(model_dir, onnx_file, images):
    import onnxruntime
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits.numpy()
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"pixel_values": pixels.numpy()})[0], expected


def test_onnx_matches_pytorch_on_real_photos(photo_classifier, photos_parquet, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert run("export", str(photo_classifier), "--output_dir", str(out), "--dataset_name", str(photos_parquet),
               "--quantize", "dynamic", "--parity_samples", "12") == 0
    for name in ("model.onnx", "model_quantized.onnx", "config.json", "preprocessor_config.json",
                 "export_report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "export_report.json").read_text())
    assert report["exporter"] in ("torch.onnx", "optimum") and report["input_size"] == [32, 32]
    parity = report["parity"]
    assert parity["num_images"] == 12 and parity["split"] == "test"
    assert parity["max_abs_logit_diff"] < ATOL and parity["top1_agreement"] == 1.0 and parity["within_atol"]
    quantized = report["quantized"]
    assert quantized["accuracy_change"] == pytest.approx(quantized["accuracy"] - parity["accuracy_pytorch"])
    assert 0 <= quantized["top1_agreement"] <= 1
    assert "top-1 agreement 1.0000" in capsys.readouterr().out
    # Independently of the command: other photos (whole scikit-image images, any batch size), processor pixels.
    images = [image for image, _ in photos(n_per_class=2, size=64, seed=7)]
    got, expected = onnx_vs_torch(photo_classifier, out / "model.onnx", images)
    assert got.shape == expected.shape == (6, 3)
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_higher_resolution_model_exports(photo_classifier, photos_parquet, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from vit_pipeline.model.resolution import resize_position_embeddings, set_processor_size

    model = AutoModelForImageClassification.from_pretrained(photo_classifier)
    processor = AutoImageProcessor.from_pretrained(photo_classifier)
    assert resize_position_embeddings(model, 48)
    set_processor_size(processor, 48)
    hires = tmp_path / "hires"
    model.save_pretrained(hires)
    processor.save_pretrained(hires)
    out = tmp_path / "onnx"
    assert run("export", str(hires), "--output_dir", str(out), "--dataset_name", str(photos_parquet),
               "--parity_samples", "6") == 0
    report = json.loads((out / "export_report.json").read_text())
    assert report["input_size"] == [48, 48] and report["parity"]["max_abs_logit_diff"] < ATOL
    got, expected = onnx_vs_torch(hires, out / "model.onnx", [image for image, _ in photos(n_per_class=1)])
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_parity_images_from_the_run_recipe(photo_classifier, photos_parquet, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(photo_classifier, run_dir)
    (run_dir / "recipe.yaml").write_text(f"model_name_or_path: x\ndataset_name: {photos_parquet}\n"
                                         "max_eval_samples: 1000\n")
    out = tmp_path / "onnx"
    assert run("export", str(run_dir), "--output_dir", str(out), "--parity_samples", "5") == 0
    parity = json.loads((out / "export_report.json").read_text())["parity"]
    assert parity["num_images"] == 5 and parity["dataset"] == str(photos_parquet)


def test_bad_inputs_one_line(photo_classifier, photos_parquet, digits_folder, tmp_path, capsys):
    cases = [
        ((str(tmp_path / "nothing"), "--dataset_name", str(photos_parquet)), "no model"),
        ((str(photo_classifier),), "has no recipe.yaml naming its data, so pass --dataset_name"),
        ((str(photo_classifier), "--dataset_name", str(digits_folder)), "of the dataset is not one the model knows"),
        ((str(photo_classifier), "--dataset_name", str(photos_parquet), "--opset", "3"), "opset must be between"),
    ]
    for args, message in cases:
        assert run("export", *args, "--output_dir", str(tmp_path / "e")) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("vit-pipeline: error:") and message in last, last


@pytest.mark.slow  # a fresh interpreter: about 20 s on 2 busy cores
def test_missing_extra_named(photo_classifier, photos_parquet, tmp_path):
    # A Python where onnxruntime cannot be imported (a module of that name that fails on import, first on the path).
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "onnxruntime.py").write_text("raise ImportError('onnxruntime is not installed here')\n")
    from tests.conftest import REPO

    proc = run_cli("export", str(photo_classifier), "--output_dir", str(tmp_path / "e"), "--dataset_name",
                   str(photos_parquet), env={"PYTHONPATH": f"{blocker}:{REPO}"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("vit-pipeline: error: export needs the export extra (onnxruntime "
                                                    "is not installed): pip install 'vit-pipeline[export]'")
    assert not (tmp_path / "e").exists()
