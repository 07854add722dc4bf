"""`vit-pipeline compare`: two tiny models of different families on the same data, the three comparison files, two
loadable output folders, a resumed comparison that keeps the finished model, and one-line errors."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from tests.conftest import FAST, photos, run_cli, save_tiny_model
from vit_pipeline import PipelineError
from vit_pipeline.commands.compare import main as compare
from vit_pipeline.commands.compare import parse_model_spec, run_folder_name


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, photos_parquet):
    root = tmp_path_factory.mktemp("compare")
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": "unused/by-compare", "dataset_name": str(photos_parquet),
                                    "num_train_epochs": 1, "learning_rate": 1.0e-3, "seed": 3}))
    return path, save_tiny_model(root / "vit", "vit", num_labels=3), save_tiny_model(root / "resnet", "resnet")


def test_model_specs_and_folder_names():
    assert parse_model_spec("microsoft/resnet-50:learning_rate=1e-3,weight_decay=0.05") == (
        "microsoft/resnet-50", {"learning_rate": "1e-3", "weight_decay": "0.05"})
    assert run_folder_name("google/vit-base-patch16-224-in21k", {}) == "google--vit-base-patch16-224-in21k"
    assert run_folder_name("/tmp/x/resnet", {"learning_rate": "1e-3"}) == "x--resnet_learning_rate=1e-3"
    with pytest.raises(PipelineError, match="is not key=value"):
        parse_model_spec("microsoft/resnet-50:learning_rate")


@pytest.mark.slow
def test_compare_two_families_writes_the_comparison_and_resumes(recipe, tmp_path):
    from statsmodels.stats.contingency_tables import mcnemar
    from transformers import pipeline

    path, vit, resnet = recipe
    out = tmp_path / "cmp"
    argv = [str(path), "--models", str(vit), f"{resnet}:learning_rate=3e-3", "--output_dir", str(out), *FAST]
    rows = compare(argv)
    assert [r["model"] for r in rows] == [str(vit), str(resnet)]
    for name in ("comparison.md", "comparison.csv", "comparison.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    with (out / "comparison.csv").open() as file:
        table = list(csv.DictReader(file))
    assert len(table) == 2 and table[1]["overrides"] == "learning_rate=3e-3"
    for row in table:
        assert 0.0 <= float(row["accuracy"]) <= 1.0 and 0.0 <= float(row["macro_f1"]) <= 1.0
        assert int(row["parameters"]) > 1000 and float(row["gflops_per_image"]) > 0
        assert float(row["train_images_per_second"]) > 0 and float(row["peak_memory_mib"]) > 0
        assert float(row["latency_batch1_ms"]) > 0 and float(row["latency_batch32_ms"]) > 0  # no order: shared CPUs
        folder = out / row["folder"]
        # A normal output folder: resolved recipe with the shared settings, loadable with pipeline().
        recipe_run = yaml.safe_load((folder / "recipe.yaml").read_text())
        assert recipe_run["seed"] == 3 and recipe_run["num_train_epochs"] == 2  # FAST wins over the recipe
        prediction = pipeline("image-classification", model=str(folder))([photos(n_per_class=1)[0][0]])
        assert prediction[0][0]["label"] in ("astronaut", "coffee", "chelsea")
    assert yaml.safe_load((out / table[1]["folder"] / "recipe.yaml").read_text())["learning_rate"] == 3e-3
    markdown = (out / "comparison.md").read_text()
    assert "learning_rate=3e-3" in markdown and "| mAP |" not in markdown and "| macro F1 |" in markdown
    # Each accuracy with its interval; the pair tested with McNemar's exact test on the same eval images.
    for row in table:
        assert float(row["accuracy_ci95_low"]) <= float(row["accuracy"]) <= float(row["accuracy_ci95_high"])
    with (out / "comparison_pairs.csv").open() as file:
        (pair,) = list(csv.DictReader(file))
    right = []
    for row in table:
        with (out / row["folder"] / "predictions.csv").open() as file:
            right.append([r["true_label"] == r["predicted_label"] for r in csv.DictReader(file)])
    a_only = sum(a and not b for a, b in zip(*right, strict=True))
    b_only = sum(b and not a for a, b in zip(*right, strict=True))
    assert (pair["model_a"], pair["model_b"]) == (table[0]["folder"], table[1]["folder"])
    assert (int(pair["images"]), int(pair["a_only_right"]), int(pair["b_only_right"])) == (len(right[0]), a_only,
                                                                                          b_only)
    expected = mcnemar([[0, a_only], [b_only, 0]], exact=True).pvalue if a_only + b_only else 1.0
    assert float(pair["p_value"]) == pytest.approx(expected)
    assert "## Is one model better than another on this data?" in markdown
    assert f"{float(pair['p_value']):.3g} |" in markdown
    # The same eight eval images explained by each model: one column per model, and each model's faithfulness.
    import numpy as np
    from PIL import Image

    views = [np.load(out / row["folder"] / "explanations.npz") for row in table]
    assert len(views[0]["rows"]) == 8 and list(views[0]["rows"]) == list(views[1]["rows"])  # the same images
    assert [str(v["method"]) for v in views] == ["rollout", "gradcam"]
    with Image.open(out / "explanations.png") as figure:
        pixels = np.asarray(figure.convert("RGB")).astype(int)
    height, width, _ = pixels.shape
    assert 3.0 < height / width < 5.0  # 8 rows of 2 columns
    # Both columns hold heat maps (saturated colours), not empty axes.
    saturation = pixels.max(-1) - pixels.min(-1)
    assert (saturation[:, : width // 2] > 100).mean() > 0.05 and (saturation[:, width // 2:] > 100).mean() > 0.05
    section = markdown[markdown.index("## Explanations"):]
    for row, method in zip(table, ("rollout", "gradcam"), strict=True):
        line = next(line for line in section.splitlines() if line.startswith(f"| `{row['folder']}` |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == method and cells[2] == "8" and all(0.0 <= float(c) <= 1.0 for c in cells[3:])

    # Interrupted after the ViT finished and while the ResNet trained: its row and final model are missing.
    vit_dir, resnet_dir = out / table[0]["folder"], out / table[1]["folder"]
    vit_mtime = (vit_dir / "model.safetensors").stat().st_mtime_ns
    (resnet_dir / "comparison_row.json").unlink()
    (resnet_dir / "model.safetensors").unlink()
    (out / "comparison.csv").unlink()
    rows = compare(argv)
    assert (vit_dir / "model.safetensors").stat().st_mtime_ns == vit_mtime  # kept, not retrained
    assert (resnet_dir / "model.safetensors").is_file() and (resnet_dir / "comparison_row.json").is_file()
    assert len(rows) == 2 and (out / "comparison.csv").is_file()
    assert json.loads((resnet_dir / "comparison_row.json").read_text())["model"] == str(resnet)
    # Other shared settings on the same folder would mix runs: refused in one line.
    with pytest.raises(PipelineError, match="was trained with other settings"):
        compare([*argv, "--seed", "4"])


def test_bad_invocations_fail_in_one_line(recipe, tmp_path):
    path, vit, _ = recipe
    result = run_cli("compare", str(path), "--output_dir", str(tmp_path / "c"))
    assert result.returncode == 2 and "compare needs --models" in result.stderr
    with pytest.raises(PipelineError, match="unknown option --learnig_rate"):
        compare([str(path), "--models", str(vit), f"{vit}:learnig_rate=1", "--output_dir", str(tmp_path / "c")])
    with pytest.raises(PipelineError, match="compare does not push"):
        compare([str(path), "--models", str(vit), "--output_dir", str(tmp_path / "c"), "--push_to_hub", "true",
                 "--hub_model_id", "me/x"])
    with pytest.raises(PipelineError, match="same model and overrides twice"):
        compare([str(path), "--models", str(vit), str(vit), "--output_dir", str(tmp_path / "c")])


def test_the_shipped_vit_vs_cnn_command_parses_for_every_model():
    from tests.conftest import REPO
    from vit_pipeline.commands.compare import split_argv
    from vit_pipeline.config import RecipeParser

    path = REPO / "recipes" / "cifar10" / "vit-vs-cnn.yaml"
    header = [line[1:].strip().rstrip("\\").strip() for line in path.read_text().splitlines()[2:4]]
    argv = " ".join(header).split()
    assert argv[:3] == ["vit-pipeline", "compare", "recipes/cifar10/vit-vs-cnn.yaml"]
    own, shared = split_argv(argv[3:], {"models": "many", "output_dir": "one"})
    assert own["models"] == ["google/vit-base-patch16-224-in21k", "microsoft/resnet-50", "facebook/convnext-tiny-224"]
    for spec in [*own["models"], "microsoft/resnet-50:learning_rate=5.0e-4"]:
        name, overrides = parse_model_spec(spec)
        _, _, training_args, _ = RecipeParser().parse([str(path), *shared, "--model_name_or_path", name,
                                                       *[f"--{k}={v}" for k, v in overrides.items()]])
        assert training_args.num_train_epochs == 3 and training_args.seed == 42


def test_multi_label_runs_report_map_and_the_table_shows_it(tmp_path):
    from vit_pipeline.commands.compare import read_metrics, write_csv, write_markdown

    run = tmp_path / "run"
    run.mkdir()
    # The keys a multi-label run writes (pipeline/evaluation/multilabel.py), as Trainer.save_metrics writes them.
    (run / "eval_results.json").write_text(json.dumps({"eval_map": 0.71, "eval_f1_macro": 0.55,
                                                       "eval_subset_accuracy": 0.4, "eval_loss": 0.3}))
    (run / "all_results.json").write_text(json.dumps({"train_samples_per_second": 12.5}))
    metrics = read_metrics(run)
    assert metrics == {"accuracy": 0.4, "macro_f1": 0.55, "mAP": 0.71, "train_images_per_second": 12.5}
    row = {"model": "m", "overrides": "", **metrics, "parameters": 10**6, "gflops_per_image": 1.0,
           "peak_memory_mib": 100.0, "latency_batch1_ms": 1.0, "latency_batch32_ms": 9.0, "folder": "run"}
    markdown = write_markdown([row], tmp_path / "c.md", "vit-pipeline compare ...", "CPU").read_text()
    assert "| mAP |" in markdown and "0.7100" in markdown
    with write_csv([row], tmp_path / "c.csv").open() as file:
        assert next(csv.DictReader(file))["mAP"] == "0.71"
