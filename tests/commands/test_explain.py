"""`vit-pipeline explain`: one PNG per real photo for a ViT (rollout) and a CNN (Grad-CAM), the faithfulness report over
a dataset's eval images, the commands of docs/commands/explain.md, and one-line refusals."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.conftest import photos, save_tiny_model
from tests.docs_blocks import blocks, commands
from vit_pipeline.cli import main

PAGE = "docs/commands/explain.md"


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
        raise SystemExit(0)
    return exit_info.value.code


def substitute(argv: list[str], values: dict[str, str]) -> list[str]:
    """The page's command with its model, images, dataset and output folder replaced by the test's."""
    return [values.get(word, word) for word in argv]


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("resnet"), "resnet", num_labels=3)


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in")
    for i, (image, _) in enumerate(photos(n_per_class=1)):
        image.save(folder / f"photo{i}.jpg")
    return folder


def test_one_png_per_image(digits_classifier, photo_files, resnet, tmp_path):
    out = tmp_path / "maps"
    assert run("explain", str(digits_classifier), str(photo_files), "--output_dir", str(out), "--head_fusion",
               "max") == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["explain_report.json", "photo0.png", "photo1.png", "photo2.png"]
    with Image.open(out / "photo0.png") as image:
        assert image.size[0] > 200
    report = json.loads((out / "explain_report.json").read_text())
    assert report["method"] == "rollout" and report["faithfulness"] is None
    assert [r["image"] for r in report["images"]] == ["photo0.png", "photo1.png", "photo2.png"]
    # The page's commands: a ViT (its default, rollout) and a CNN with a CAM method and a --target.
    vit_line, cnn_line = commands(PAGE, "test_one_png_per_image")
    values = {"out/beans-vit": str(digits_classifier), "out/beans-resnet": str(resnet),
              "photo1.jpg": str(photo_files / "photo1.jpg"), "photo2.jpg": str(photo_files / "photo2.jpg"),
              "maps": str(tmp_path / "page"), "healthy": "LABEL_2"}
    assert run(*substitute(vit_line, values)) == 0
    assert run(*substitute(cnn_line, values)) == 0
    report = json.loads((tmp_path / "page" / "explain_report.json").read_text())
    assert report["method"] == "gradcam++" and report["images"][0]["label"] == "LABEL_2"


def test_faithfulness_over_a_datasets_eval_images(resnet, photos_parquet, tmp_path, capsys):
    argv, = commands(PAGE, "test_faithfulness_over_a_datasets_eval_images")
    out = tmp_path / "maps"
    values = {"out/beans-resnet": str(resnet), "AI-Lab-Makerere/beans": str(photos_parquet), "maps": str(out),
              "16": "3"}
    assert run(*substitute(argv, values)) == 0
    report = json.loads((out / "explain_report.json").read_text())
    assert report["method"] == "gradcam" and len(report["images"]) == 3
    assert sorted(p.name for p in out.glob("*.png")) == ["test-0000.png", "test-0001.png", "test-0002.png"]
    summary = report["faithfulness"]
    assert summary["images"] == 3 and summary["steps"] == 16
    for row in report["images"]:
        assert all(0.0 <= row[k] <= 1.0 for k in ("deletion_auc", "insertion_auc", "random_deletion_auc",
                                                   "random_insertion_auc"))
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == (f"gradcam on 3 image(s): deletion AUC {summary['deletion_auc']:.3f} (random map "
                       f"{summary['random_deletion_auc']:.3f}; lower is more faithful), insertion AUC "
                       f"{summary['insertion_auc']:.3f} (random map {summary['random_insertion_auc']:.3f}; higher is "
                       "more faithful)")


@pytest.mark.parametrize("flags, message", [
    (["--method", "rollout"], "--method rollout does not apply to ResNetForImageClassification (resnet: no ViT-style "
                              "global self-attention): use gradcam, gradcam++, xgradcam, hirescam, layercam, "
                              "eigencam, eigengradcam, scorecam"),
    (["--method", "gradcam+"], "unknown --method gradcam+: use one of rollout, gradcam, gradcam++"),
    (["--target", "zebra"], "--target zebra is not a label of the model (LABEL_0, LABEL_1, LABEL_2)"),
])
def test_bad_requests_are_refused_in_one_line(resnet, photo_files, tmp_path, capsys, flags, message):
    assert run("explain", str(resnet), str(photo_files / "photo0.jpg"), "--output_dir", str(tmp_path / "x"),
               *flags) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"vit-pipeline: error: {message}")
    assert not (tmp_path / "x").exists()
    if flags == ["--method", "rollout"]:  # the refusal the page shows, word for word
        shown = [b.body.strip() for b in blocks(PAGE) if b.what and b.what.endswith(
            "::test_bad_requests_are_refused_in_one_line")]
        assert shown == [last]
