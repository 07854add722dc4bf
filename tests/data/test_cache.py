"""The pixel cache: training images kept a little larger than the model input, built once, and a real run on it."""

from __future__ import annotations

import pytest
import torch

from vit_pipeline.data.cache import cache_size
from vit_pipeline.data.prepare import prepare_dataset
from vit_pipeline.data.transforms import image_spec


def test_pixel_cache_keeps_training_images_a_little_larger_than_the_model_input(photo_files):
    from transformers import ViTImageProcessor

    from vit_pipeline.config import DataArguments

    processor = ViTImageProcessor()
    _, ds = photo_files
    assert cache_size(image_spec(processor)) == 256
    train = prepare_dataset(ds, processor, DataArguments(dataset_name="x", pixel_cache=True), train=True)
    raw = train.with_format(None)
    sides = [min(h, w) for h, w in zip(raw["height"], raw["width"], strict=True)]
    # Every photo is at least 300 px: shrunk to a 256 px shorter side, aspect kept.
    assert sides == [256] * len(ds)
    batch = train.__getitems__(list(range(len(ds))))  # the batch path builds the whole batch
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (len(ds), 3, 224, 224)
    # The cache is built once: a second preparation finds it (same fingerprint) instead of decoding again.
    again = prepare_dataset(ds, processor, DataArguments(dataset_name="x", pixel_cache=True), train=True)
    assert again.with_format(None)["height"] == raw["height"]


def test_pixel_cache_needs_the_fast_transforms():
    from vit_pipeline import PipelineError
    from vit_pipeline.config import DataArguments

    with pytest.raises(PipelineError, match="pixel_cache needs fast_transforms"):
        DataArguments(dataset_name="x", pixel_cache=True, fast_transforms=False)


@pytest.mark.slow
def test_train_with_pixel_cache_and_reload_with_pipeline(tiny_vit, photos_parquet, tmp_path):
    """The real command with the pixel cache: it trains, evaluates on cached pixels, and pipeline() reloads it."""
    import json

    from tests.commands.test_train import check_output, train
    from tests.conftest import FAST

    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny_vit), "--dataset_name", str(photos_parquet), "--output_dir", str(out),
          *FAST, "--pixel_cache", "true")
    check_output(out, ["astronaut", "chelsea", "coffee"])
    assert "pixel_cache: true" in (out / "recipe.yaml").read_text()
    # The eval loss measured on cached pixels is the loss of the saved model on what its saved processor makes of the
    # same test images (the fixture's test split): training evaluated exactly what pipeline() will see.
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from tests.conftest import photos

    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    test_rows = photos(n_per_class=4, seed=1)
    inputs = processor([image for image, _ in test_rows], return_tensors="pt")
    labels = torch.tensor([model.config.label2id[name] for _, name in test_rows])
    with torch.no_grad():
        # The saved model is calibrated (its head divided by T): eval_loss was measured before, on logits x T.
        logits = model(**inputs).logits * model.config.calibration_temperature
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert loss == pytest.approx(json.loads((out / "eval_results.json").read_text())["eval_loss"], abs=1e-5)


def _split(rows: int):
    import datasets

    return datasets.Dataset.from_dict({"label": list(range(rows))})


@pytest.mark.parametrize(("set_to", "epochs", "expected"), [
    (None, 3.0, True),     # unset: a few epochs over a small set pay for the cache
    (None, 1.0, False),    # one read per image: caching is a second decode pass for nothing
    (False, 40.0, False),  # set: kept as set
    (True, 1.0, True),
])
def test_pixel_cache_unset_is_decided_by_the_epochs(set_to, epochs, expected):
    from transformers import ViTImageProcessor

    from vit_pipeline.config import DataArguments
    from vit_pipeline.data.cache import CacheDecision, choose_pixel_cache, decide_pixel_cache

    data_args = DataArguments(dataset_name="x", pixel_cache=set_to)
    spec = image_spec(ViTImageProcessor())
    use, why = choose_pixel_cache(data_args, spec, _split(500), _split(100), epochs)
    assert use is expected and why
    decision = CacheDecision(spec, epochs=lambda rows: epochs)
    resolved = decide_pixel_cache(data_args, _split(500), _split(100), decision)
    assert resolved.pixel_cache is expected and data_args.pixel_cache is set_to
    # Commands that do not train give no decision: an unset pixel_cache stays unset (no cache).
    assert decide_pixel_cache(data_args, _split(500), _split(100), None).pixel_cache is set_to


def test_pixel_cache_unset_stays_off_when_the_cache_would_be_too_big():
    from transformers import ViTImageProcessor

    from vit_pipeline.config import DataArguments
    from vit_pipeline.data.cache import AUTO_CACHE_MAX_BYTES, cache_bytes, choose_pixel_cache

    # 4,096 px inputs: about 90 MB of pixels per training image, so 200 images are over the 10 GiB bound.
    spec = image_spec(ViTImageProcessor(size={"height": 4096, "width": 4096}))
    assert cache_bytes(spec, 200, 20) > AUTO_CACHE_MAX_BYTES
    use, why = choose_pixel_cache(DataArguments(dataset_name="x"), spec, _split(200), _split(20), 10.0)
    assert not use and "GiB" in why
    # 224 px: 500 + 100 images are about 110 MB, well within it.
    assert cache_bytes(image_spec(ViTImageProcessor()), 500, 100) == 3 * (500 * 256 * 256 * 4 // 3 + 100 * 224 * 224)
