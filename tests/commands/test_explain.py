"""`vit-pipeline explain`: one rollout PNG per real photo for a ViT; a CNN is refused in one line."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.conftest import photos
from vit_pipeline.cli import main


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
        raise SystemExit(0)
    return exit_info.value.code


def test_one_png_per_image(digits_classifier, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (image, _) in enumerate(photos(n_per_class=1)):
        image.save(folder / f"photo{i}.jpg")
    out = tmp_path / "maps"
    assert run("explain", str(digits_classifier), str(folder), "--output_dir", str(out), "--head_fusion", "max") == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["photo0.png", "photo1.png", "photo2.png"]
    with Image.open(out / "photo0.png") as image:
        assert image.size[0] > 200


def test_cnn_refused(tmp_path, capsys):
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    model_dir = tmp_path / "resnet"
    ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1],
                                              num_labels=2)).save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    image = tmp_path / "a.png"
    photos(n_per_class=1)[0][0].save(image)
    assert run("explain", str(model_dir), str(image), "--output_dir", str(tmp_path / "x")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("vit-pipeline: error: ResNetForImageClassification has no self-attention maps")
