"""`vit-pipeline audit` on real digits with planted faults, embedded by a model trained on other digits; `train`'s
own duplicate count, class balance and `exclude_images`; bad inputs give one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.commands.audit_data import digit_images, write_planted
from tests.conftest import REPO, run_cli_here, write_imagefolder
from tests.docs_blocks import commands

PAGE = "docs/commands/audit.md"
AUDIT_FILES = ("audit_report.json", "audit_report.md", "issues.csv", "exclude.txt", "label_issues.png",
               "duplicates.png", "leakage.png")


def save_tiny_resnet(path: Path) -> Path:
    """A random tiny ResNet for the ten digits at 16 px: trained 6 epochs it reaches 0.94 (a tiny ViT of the
    same cost stays near 0.6, too weak an embedder to tell a flipped label from a hard digit). With it the audit
    finds 17 of the 18 flipped labels among 22 flagged (knn route; 5 epochs: 18 of 18 among 28)."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    ResNetForImageClassification(ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                              layer_type="basic", num_labels=10)).save_pretrained(path)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(path)
    return path


def docs_command(name: str) -> list[str]:
    """The docs page's `vit-pipeline NAME ...` command line (its arguments after NAME)."""
    return next(argv for argv in commands(PAGE, "test_audit_finds_planted_faults") if argv[0] == name)


@pytest.mark.slow
def test_audit_finds_planted_faults(tmp_path, monkeypatch):
    from vit_pipeline.config.arguments import DataArguments
    from vit_pipeline.data.exclude import image_paths
    from vit_pipeline.data.load import load_splits

    monkeypatch.chdir(REPO)  # the page's commands name recipes/quickstart.yaml from the repository root
    rows = digit_images()
    # The embedder: the page's train command (the quickstart recipe) on 800 other digits, with 5 eval images that
    # are copies of train images and 3 train images excluded by a hand-written exclude file.
    clean = write_imagefolder(tmp_path / "clean", {"train": rows[:650], "validation": rows[650:800] + rows[:5]})
    listed = sorted(str(p) for p in (clean / "train").rglob("*.png"))[:3]
    (tmp_path / "exclude.txt").write_text("# hand-written\n" + "\n".join(listed) + "\n")
    embedder = tmp_path / "embedder"
    trained = run_cli_here(*docs_command("train"), "--model_name_or_path", str(save_tiny_resnet(tmp_path / "tiny")),
                           "--dataset_name", str(clean), "--exclude_images", str(tmp_path / "exclude.txt"),
                           "--output_dir", str(embedder), "--num_train_epochs", "6", "--learning_rate", "3e-3",
                           "--disable_tqdm", "true")
    assert trained.returncode == 0, trained.stderr[-2000:]
    card = (embedder / "README.md").read_text()
    # 650 - 3 excluded train images, 65 of them then held out as the test part (test_fraction 0.1, seed 42), which
    # took one of the 5 copied originals with it: 4 eval images copy train images.
    assert "**4 of these 155 eval images are exact copies of train images**" in card
    assert "582 training images" in card and "Images excluded (`exclude_images`): train 3." in card
    assert "| Class | Train | Eval |" in card and "Excluded 3 image(s)" in trained.stderr
    assert "4 eval images are exact copies of train images" in trained.stderr

    # The audit: the page's audit command on 500 other digits with faults planted.
    planted = write_planted(tmp_path / "planted", rows[800:1300], n_eval=100)
    out = tmp_path / "audit"
    audited = run_cli_here(*docs_command("audit"), "--model", str(embedder), "--dataset_name", str(planted.root),
                           "--output_dir", str(out))
    assert audited.returncode == 0, audited.stderr[-2000:]
    for name in AUDIT_FILES:
        assert (out / name).is_file(), name
    report = json.loads((out / "audit_report.json").read_text())
    flagged = {row["path"] for row in report["label_issues"]}
    found = flagged & set(planted.flipped)
    assert len(found) >= 0.8 * len(planted.flipped) and len(found) >= 0.6 * len(flagged), (len(found), len(flagged))
    groups = [{m["path"] for m in d["members"]} for d in report["duplicates"]]
    exact = [g for g, d in zip(groups, report["duplicates"], strict=True) if d["kind"] == "exact"]
    assert all(any(p in g for g in exact) for p in planted.exact)
    near = [g for g, d in zip(groups, report["duplicates"], strict=True) if d["kind"] == "near"]
    assert sum(any(p in g for g in near) for p in planted.near) >= 0.9 * len(planted.near)
    # The test split (held out of train) is audited too: an exact copy whose original it took copies a test image,
    # not a train image, so it is a duplicate but no leak from train.
    copied = [d for d in report["duplicates"] if d["kind"] == "exact" and {m["path"] for m in d["members"]} & set(
        planted.exact)]
    from_train = [d for d in copied if any(m["split"] == "train" for m in d["members"])]
    assert any(m["split"] == "test" for d in copied for m in d["members"])
    assert report["leakage"]["splits"]["eval"]["exact"] == len(from_train) >= len(planted.exact) - 2
    accuracy = report["leakage"]["model_accuracy"]
    eval_leaks = report["leakage"]["splits"]["eval"]
    assert accuracy["num_images"] == 124
    assert accuracy["num_images_without_leaked"] == 124 - eval_leaks["exact"] - eval_leaks["near"] <= 102
    assert {r["path"] for r in report["image_issues"]["dark"]} >= set(planted.dark)
    assert {r["path"] for r in report["image_issues"]["low_information"]} >= set(planted.blank)
    assert report["class_balance"]["starved"] == [planted.starved]
    assert "timing: embedding pass" in audited.stdout

    # exclude.txt drops exactly the images it lists, and nothing else.
    listed = {line for line in (out / "exclude.txt").read_text().splitlines() if not line.startswith("#")}
    assert set(planted.dark) <= listed
    # Of each group of exact copies one image stays: the train one when there is one (so each leaked copy goes).
    for group in copied:
        paths_of = [m["path"] for m in group["members"]]
        assert len(set(paths_of) & listed) == len(paths_of) - 1, paths_of
    assert {p for d in from_train for p in (m["path"] for m in d["members"]) if p in planted.exact} <= listed
    data = DataArguments(dataset_name=str(tmp_path / "planted"))
    before, after = (load_splits(data, seed=42),
                     load_splits(DataArguments(dataset_name=data.dataset_name, exclude_images=str(out / "exclude.txt")),
                                 seed=42))
    # The test part is held out of what is left of train, so train and test are compared together.
    def files(splits):
        return {"train": set(image_paths(splits.train, "image")) | set(image_paths(splits.test, "image")),
                "eval": set(image_paths(splits.eval, "image"))}

    paths, kept = files(before), files(after)
    for split in ("train", "eval"):
        assert kept[split] == paths[split] - listed
    assert sum(after.excluded_images.values()) == len(listed)


def test_bad_inputs_one_line(digits_classifier, digits_folder, tagged_digits_parquet, tmp_path, monkeypatch):
    recipe = tmp_path / "no-data.yaml"
    recipe.write_text("model_name_or_path: some/model\nlearning_rate: 1.0e-3\n")
    unknown = tmp_path / "exclude.txt"
    unknown.write_text(f"{digits_folder}/train/0/9999.png\n")
    data = ("--dataset_name", str(digits_folder))
    cases = [
        (("audit", "--model", str(tmp_path / "no-such-model"), *data), "no model"),
        (("audit", str(recipe)), "no data: set dataset_name"),
        (("audit", "--model", str(digits_classifier), *data, "--exclude_images", str(unknown)),
         "names 1 image(s) that are not in the data"),
        (("audit", "--model", str(digits_classifier), "--dataset_name", str(tagged_digits_parquet)),
         "audit is single-label only"),
        (("train", "--model_name_or_path", str(digits_classifier), *data, "--exclude_images", str(tmp_path / "none")),
         "is not a file"),
    ]
    for args, message in cases:
        result = run_cli_here(*args, "--output_dir", str(tmp_path / "a"))
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 2 and message in last and last.startswith("vit-pipeline: error:"), result.stderr
        assert "Traceback" not in result.stderr
    monkeypatch.setitem(sys.modules, "cleanvision", None)  # the audit extra not installed
    result = run_cli_here("audit", "--model", str(digits_classifier), *data, "--output_dir", str(tmp_path / "a"))
    assert result.returncode == 2 and "pip install 'vit-pipeline[audit]'" in result.stderr.strip().splitlines()[-1]
