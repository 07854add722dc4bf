"""`vit-pipeline benchmark`: every figure printed and positive on CPU, FLOPs from the config, the reference file."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli
from tests.docs_blocks import commands
from vit_pipeline import PipelineError
from vit_pipeline.commands.benchmark import (
    REFERENCE_FILE,
    ExampleScriptTransform,
    counted_flops_per_image,
    main,
    parse_options,
    read_reference,
    vit_macs_per_image,
)
from vit_pipeline.config import RecipeParser

BENCHMARKS = REPO / "benchmarks"
ROWS = ("data only (images/s)", "model only (images/s)", "end to end (images/s)", "peak memory (MiB)",
        "MFU model only (%)", "MFU end to end (%)")


@pytest.mark.slow
def test_benchmark_command_prints_every_figure(tmp_path):
    """The real command on the quickstart recipe, few steps: each figure for both configurations, and the ratio."""
    out = tmp_path / "figures.json"
    # The command the README, the benchmark page and the speed page show, few steps (later flags win).
    [argv] = commands("README.md", "test_benchmark_command_prints_every_figure")
    assert commands("docs/commands/benchmark.md", "test_benchmark_command_prints_every_figure") == [argv]
    (command,) = commands("docs/speed.md", "test_benchmark_command_prints_every_figure")
    assert command[:2] == argv == ["benchmark", "recipes/quickstart.yaml"]
    result = run_cli(*command, "--steps", "3", "--warmup", "1", "--json", str(out), "--max_train_samples", "256",
                     timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for row in ROWS:
        line = next((line for line in lines if line.startswith(row)), None)
        assert line is not None, f"{row} missing from:\n{result.stdout}"
        numbers = [float(n.replace(",", "")) for n in re.findall(r"[\d,]+\.?\d*(?:e[-+]?\d+)?", line[len(row):])]
        assert len(numbers) == 3 and all(n > 0 for n in numbers), line  # pipeline, reference, ratio
    # What the data path leaves of the model's rate, on its own line, per configuration.
    share = re.search(r"^end to end / model only\s+(\d+)%\s+(\d+)%$", result.stdout, re.MULTILINE)
    assert share is not None, result.stdout
    assert "device peak:" in result.stdout and "FLOP per training image" in result.stdout
    assert "reference: fp32, 0 loader workers" in result.stdout and "example-script per-image PIL" in result.stdout
    figures = json.loads(out.read_text())
    assert set(figures["configurations"]) == {"pipeline", "reference"}
    for config in figures["configurations"].values():
        for key in ("data_images_per_s", "model_images_per_s", "end_to_end_images_per_s", "peak_memory_mib",
                    "mfu_model", "mfu_end_to_end"):
            assert config[key] > 0, key
    assert figures["flops_per_image"] == pytest.approx(6 * 9.31e6, rel=0.01)  # the quickstart ViT at 16 px
    assert all(v > 0 for v in figures["ratio"].values())
    for name, percent in zip(("pipeline", "reference"), share.groups(), strict=True):
        config = figures["configurations"][name]
        assert config["end_to_end_over_model"] == pytest.approx(
            config["end_to_end_images_per_s"] / config["model_images_per_s"])
        assert int(percent) == round(100 * config["end_to_end_over_model"])
    # Start-up: loading the data, then the first batch, said and written; the quickstart's epochs turn the pixel
    # cache on, and its one decode pass is the image check.
    assert figures["startup"]["checked_while_caching"] is True
    assert re.search(r"start-up: 256 \+ 360 images loaded in [\d.]+ s \([\d.]+ ms per image; checked while the "
                     r"pixel cache is built\); first training batch [\d.]+ s later", result.stdout), result.stdout
    assert figures["startup"]["load_s"] > 0 and figures["startup"]["first_batch_s"] > 0
    # The recipe's whole run at those rates: its epochs over the 256 images, the seconds each configuration takes.
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    batch, run = recipe["per_device_train_batch_size"], figures["recipe_run"]
    assert run["steps"] == -(-256 // batch) * recipe["num_train_epochs"] and run["images"] == run["steps"] * batch
    assert run["epochs"] == recipe["num_train_epochs"]
    for name, config in figures["configurations"].items():
        assert run["seconds"][name] == pytest.approx(
            run["images"] / config["end_to_end_images_per_s"] + run["cache_seconds"][name])
    assert run["ratio"] == pytest.approx(run["seconds"]["reference"] / run["seconds"]["pipeline"])
    assert re.search(rf"recipe run: {run['steps']:,} steps of {batch} images, [\d.]+ epochs, training steps at the "
                     r"end-to-end rate: pipeline [\d.,]+ s.*reference [\d.,]+ s: [\d.]+x", result.stdout), result.stdout


@pytest.mark.slow
def test_benchmark_measures_the_streaming_path(tmp_path):
    """With streaming: the recipe's own path only (the example script cannot read a stream), and its start-up."""
    from tests.conftest import digits, save_tiny_vit
    from tests.data.test_stream import write_webdataset

    data = write_webdataset(tmp_path / "wds", digits(n_per_class=8))
    model = save_tiny_vit(tmp_path / "model", image_size=16)
    out = tmp_path / "figures.json"
    result = run_cli("benchmark", "--model_name_or_path", str(model), "--dataset_name", str(data), "--streaming",
                     "true", "--steps", "2", "--warmup", "1", "--per_device_train_batch_size", "8", "--json", str(out),
                     timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "streaming" in result.stdout and "start-up (streaming): stream opened" in result.stdout
    figures = json.loads(out.read_text())
    assert set(figures["configurations"]) == {"pipeline"} and figures["startup"]["streaming"]
    assert figures["configurations"]["pipeline"]["end_to_end_images_per_s"] > 0


@pytest.mark.parametrize("model", ["benchmarks/models/vit-tiny-224", "benchmarks/models/vit-base-patch16-224",
                                   "recipes/models/vit-tiny-digits"])
@pytest.mark.slow
def test_flops_from_the_config_match_counted_flops(model):
    from transformers import AutoConfig, ViTForImageClassification

    config = AutoConfig.from_pretrained(REPO / model, num_labels=10)
    size = (config.image_size, config.image_size)
    macs = vit_macs_per_image(config, size)
    if "base" in model:
        # ViT-B/16 at 224 px: the 17.6 GMACs per forward everyone quotes.
        assert macs == pytest.approx(17.56e9, rel=0.005)
        return
    counted = counted_flops_per_image(ViTForImageClassification(config), size)
    assert 6 * macs == pytest.approx(counted, rel=1e-6)


def test_reference_configuration_is_the_example_script():
    kind, flags = read_reference(str(REFERENCE_FILE))
    assert kind == "example_script"
    _, data_args, args, _ = RecipeParser().parse([str(REPO / "recipes" / "quickstart.yaml"), *flags])
    assert (args.bf16, args.fp16, args.tf32, args.torch_compile) == (False, False, False, False)
    assert not data_args.fast_transforms and not data_args.pixel_cache
    assert args.dataloader_num_workers == 0 and not args.dataloader_persistent_workers


def test_example_script_transform_gives_float_rows():
    import datasets
    import torch
    from transformers import AutoImageProcessor

    from tests.conftest import photos, to_dataset

    processor = AutoImageProcessor.from_pretrained(BENCHMARKS / "models" / "vit-tiny-224")
    ds = to_dataset(photos(n_per_class=1), class_names=["astronaut", "coffee", "chelsea"])
    assert isinstance(ds.features["image"], datasets.Image)
    rows = ds.with_transform(ExampleScriptTransform(processor))[:3]
    assert all(p.dtype == torch.float32 and p.shape == (3, 224, 224) for p in rows["pixel_values"])


@pytest.mark.parametrize("recipe", sorted(BENCHMARKS.glob("*.yaml")), ids=lambda p: p.name)
def test_benchmark_recipes_parse(recipe, tmp_path):
    model_args, data_args, args, _ = RecipeParser().parse([str(recipe), "--output_dir", str(tmp_path)])
    assert (REPO / model_args.model_name_or_path / "config.json").is_file()
    header = recipe.read_text().split("\n\n")[0]
    assert f"vit-pipeline benchmark benchmarks/{recipe.name}" in header
    # The command that writes its data comes first too (photos.py: JPEG photos; folder.py: small PNGs).
    writes = (f"python benchmarks/{script} {data_args.dataset_name}" for script in ("photos.py", "folder.py"))
    assert any(command in header for command in writes)


def test_photo_dataset_is_real_jpegs(tmp_path):
    from vit_pipeline.config import DataArguments
    from vit_pipeline.data.load import load_splits

    spec = importlib.util.spec_from_file_location("photos", BENCHMARKS / "photos.py")
    photos_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(photos_module)
    folder = photos_module.write_photos(tmp_path / "photos", count=16, eval_count=8)
    splits = load_splits(DataArguments(dataset_name=str(folder)), seed=0)
    assert (len(splits.train) + len(splits.test), len(splits.eval), len(splits.labels)) == (16, 8, 8)
    raw = splits.train.cast_column("image", splits.train.features["image"].__class__(decode=False))
    first = raw[0]["image"]["bytes"]
    assert first.startswith(b"\xff\xd8\xff")  # JPEG bytes inside the dataset
    image = splits.train[0]["image"]
    assert max(image.size) == 500


@pytest.mark.parametrize("argv, message", [
    (["recipes/quickstart.yaml", "--steps", "0"], "--steps must be at least 1"),
    (["recipes/quickstart.yaml", "--warmup", "x"], "argument --warmup: invalid int value: 'x'"),
    (["recipes/quickstart.yaml", "--reference"], "argument --reference: expected one argument"),
    ([], "no recipe"),
])
def test_bad_benchmark_flags(argv, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        main(argv)


def test_benchmark_flags_and_recipe_flags_are_told_apart():
    options, recipe_argv = parse_options(["r.yaml", "--warmup_steps", "0.1", "--steps=5", "--learning_rate", "1e-3",
                                          "--no_reference", "--repeats", "2"])
    assert (options.steps, options.repeats, options.reference, options.warmup) == (5, 2, None, None)
    # `--warmup_steps` is a recipe field, not an abbreviation of --warmup.
    assert recipe_argv == ["r.yaml", "--warmup_steps", "0.1", "--learning_rate", "1e-3"]
    assert parse_options(["r.yaml"])[0].reference == str(REFERENCE_FILE)


def test_unknown_transform_kind_in_a_reference(tmp_path):
    reference = tmp_path / "ref.yaml"
    reference.write_text(yaml.safe_dump({"transforms": "pil", "bf16": False}))
    with pytest.raises(PipelineError, match="transforms: pil"):
        read_reference(str(reference))
    assert Path(REFERENCE_FILE).is_file()
