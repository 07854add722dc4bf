"""Shared fixtures: tiny ViT checkpoints and real-image datasets in every layout the pipeline reads.

Nothing here reaches the network: checkpoints are random tiny `ViTConfig` models saved to a temp folder and
loaded back through `from_pretrained` (the path a Hub id takes); images are scikit-learn's digits and
scikit-image's sample photos, written as imagefolder / parquet / save_to_disk folders laid out like Hub repos.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Before transformers / datasets / huggingface_hub are imported anywhere: no network, private caches.
_CACHE = Path(tempfile.mkdtemp(prefix="vit-pipeline-tests-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_CACHE / "hf")
os.environ["HF_DATASETS_CACHE"] = str(_CACHE / "datasets")
os.environ["VIT_PIPELINE_CACHE"] = str(_CACHE / "builtin")
os.environ.pop("HF_TOKEN", None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch (OpenMP / MKL) thread in this process and in every command a test starts (they inherit the environment):
# the tiny models gain nothing from a second thread, and on 2 shared cores the threads of one process spin against
# each other and against the other processes (measured: a 38-step run 33 s on 2 threads, 16 s on 1, at load 5).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.conftest_hub"] if (Path(__file__).parent / "conftest_hub.py").exists() else []

TINY_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def save_tiny_vit(path: Path, num_labels: int = 3, image_size: int = 32, head: bool = True, seed: int = 0,
                  **processor_kwargs) -> Path:
    """Save a random tiny ViT (classifier or bare backbone) and its image processor to `path`."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(**{**TINY_VIT, "image_size": image_size}, num_labels=num_labels)
    model = ViTForImageClassification(config) if head else ViTModel(config, add_pooling_layer=False)
    model.save_pretrained(path)
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size}, **processor_kwargs)
    processor.save_pretrained(path)
    return path


# One tiny random configuration per model family, with an image processor of that family's own kind and rules
# (ConvNeXt / ResNet: shortest_edge with crop_pct; DINOv2: shortest edge then crop; BEiT / DeiT: resize then crop;
# EfficientNet: include_top), scaled down to a few dozen pixels.
FAMILIES = ("vit", "deit", "beit", "swin", "dinov2", "convnext", "resnet", "efficientnet")


def tiny_family(family: str, num_labels: int = 3, image_size: int = 32):
    """(config, image processor) of a random tiny classifier of `family` (one of FAMILIES), about 5-35k weights."""
    import transformers as T

    size, crop = {"height": image_size, "width": image_size}, {"height": image_size, "width": image_size}
    larger = {"height": image_size + 4, "width": image_size + 4}
    vit_like = dict(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    if family == "vit":
        config = T.ViTConfig(**TINY_VIT)
        processor = T.ViTImageProcessor(size=size)
    elif family == "deit":
        config = T.DeiTConfig(**vit_like, intermediate_size=64, architectures=["DeiTForImageClassification"])
        processor = T.DeiTImageProcessor(size=larger, crop_size=crop)
    elif family == "beit":
        config = T.BeitConfig(**vit_like, intermediate_size=64, use_relative_position_bias=True)
        processor = T.BeitImageProcessor(size=larger, crop_size=crop)
    elif family == "swin":
        config = T.SwinConfig(image_size=image_size, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                              window_size=4)
        processor = T.ViTImageProcessor(size=size)
    elif family == "dinov2":
        config = T.Dinov2Config(**vit_like, mlp_ratio=2)
        processor = T.BitImageProcessor(size={"shortest_edge": image_size + 4}, crop_size=crop)
    elif family == "convnext":
        config = T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
        processor = T.ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=0.875)
    elif family == "resnet":
        config = T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
        processor = T.ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=0.875, resample=3)
    elif family == "efficientnet":
        # hidden_dim must equal the top convolution's width (round_filters(1280) at this width_coefficient).
        config = T.EfficientNetConfig(image_size=image_size, width_coefficient=0.1, depth_coefficient=0.1,
                                      hidden_dim=128)
        processor = T.EfficientNetImageProcessor(size=size)
    else:
        raise ValueError(f"unknown family {family}")
    config.num_labels = num_labels
    return config, processor


def save_tiny_model(path: Path, family: str, num_labels: int = 3, seed: int = 0) -> Path:
    """Save a random tiny classifier of `family` and its image processor to `path` (a local stand-in checkpoint)."""
    import torch
    from transformers import AutoModelForImageClassification

    torch.manual_seed(seed)
    config, processor = tiny_family(family, num_labels)
    AutoModelForImageClassification.from_config(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A random tiny ViTForImageClassification with a 3-label head (another label set than the data's)."""
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"), num_labels=3)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A random tiny bare ViTModel (no classification head), like google/vit-base-patch16-224-in21k."""
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-backbone"), head=False)


def digits(n_per_class: int = 20, classes: int = 10, seed: int = 0) -> list[tuple[Image.Image, int]]:
    """Real handwritten digits from scikit-learn, as 8-bit grayscale PIL images with their digit."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(seed)
    out = []
    for digit in range(classes):
        idx = rng.permutation(np.flatnonzero(data.target == digit))[:n_per_class]
        for i in idx:
            array = np.round(data.images[i] * (255 / 16)).astype(np.uint8)
            out.append((Image.fromarray(array, mode="L"), digit))
    return out


PHOTO_NAMES = ("astronaut", "coffee", "chelsea")


def photos(n_per_class: int = 8, size: int = 48, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """Random crops of scikit-image's sample photos, one class per photo, as RGB PIL images."""
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    out = []
    for name in PHOTO_NAMES:
        array = getattr(skdata, name)()
        h, w = array.shape[:2]
        for _ in range(n_per_class):
            top, left = rng.integers(0, h - 2 * size), rng.integers(0, w - 2 * size)
            crop = array[top:top + 2 * size, left:left + 2 * size]
            out.append((Image.fromarray(crop).resize((size, size)), name))
    return out


def write_imagefolder(root: Path, splits: dict[str, list[tuple[Image.Image, object]]], fmt: str = "png") -> Path:
    """Write `{split: [(image, label)]}` as `root/<split>/<label>/<n>.<fmt>` (a Hub imagefolder repo layout)."""
    for split, rows in splits.items():
        for i, (image, label) in enumerate(rows):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{i:04d}.{fmt}")
    return root


def to_dataset(rows: list[tuple[Image.Image, object]], image_column: str = "image", label_column: str = "label",
               class_names: list[str] | None = None):
    """Build a `datasets.Dataset` with an Image column and a label column (ClassLabel when names are given)."""
    import datasets

    features = {image_column: datasets.Image()}
    labels = [label for _, label in rows]
    if class_names is not None:
        features[label_column] = datasets.ClassLabel(names=class_names)
        labels = [class_names.index(str(label)) if not isinstance(label, int) else label for label in labels]
    else:
        features[label_column] = datasets.Value("string" if isinstance(labels[0], str) else "int64")
    return datasets.Dataset.from_dict({image_column: [im for im, _ in rows], label_column: labels},
                                      features=datasets.Features(features))


def write_parquet_repo(root: Path, splits: dict[str, object], readme: bool = True) -> Path:
    """Write datasets as `root/data/<split>-00000-of-00001.parquet` plus a README with `dataset_info`, like the Hub."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, ds in splits.items():
        ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    if readme:
        from huggingface_hub import DatasetCard, DatasetCardData

        first = next(iter(splits.values()))
        info = {"features": first.features._to_yaml_list(),
                "splits": [{"name": s, "num_examples": len(d)} for s, d in splits.items()]}
        configs = [{"config_name": "default",
                    "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}]
        card = DatasetCard(f"---\n{DatasetCardData(dataset_info=info, configs=configs).to_yaml()}\n---\n# test\n")
        card.save(root / "README.md")
    return root


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """Digits as an imagefolder with train and validation splits (10 classes, 30 + 10 per class)."""
    rows = digits(n_per_class=40)
    train = [r for i, r in enumerate(rows) if i % 4]
    val = [r for i, r in enumerate(rows) if not i % 4]
    return write_imagefolder(tmp_path_factory.mktemp("digits-imagefolder"), {"train": train, "validation": val})


@pytest.fixture(scope="session")
def photos_parquet(tmp_path_factory) -> Path:
    """Photos as a Hub-like parquet repo: `img` column, string labels, train + test splits, README dataset_info."""
    train, test = photos(n_per_class=12, seed=0), photos(n_per_class=4, seed=1)
    root = tmp_path_factory.mktemp("photos-parquet")
    return write_parquet_repo(root, {"train": to_dataset(train, image_column="img"),
                                     "test": to_dataset(test, image_column="img")})


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m vit_pipeline ARGS` as a user would, from the repository root."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "vit_pipeline", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """`vit-pipeline ARGS` in this process (`vit_pipeline.cli.main`, what `python -m vit_pipeline` runs), returned as
    `run_cli` returns it: the exit status, stdout, and stderr with the pipeline's log lines.

    For runs that need no process of their own: a `python -m vit_pipeline` start pays several seconds of imports here.
    Keep `run_cli` for signals, exit codes of a real process, launchers and what a user types.
    """
    import io
    import logging
    from contextlib import redirect_stderr, redirect_stdout

    from vit_pipeline.cli import main

    out, err, logs = io.StringIO(), io.StringIO(), io.StringIO()
    # The format `setup_logging` gives a command of its own (under pytest, logging is already configured).
    handler = logging.StreamHandler(logs)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(list(args))
                code = 0
            except SystemExit as exit_info:
                code = exit_info.code if isinstance(exit_info.code, int) else 1
    finally:
        logging.getLogger().removeHandler(handler)
    # Log lines come before the command's last line (its error), as on a terminal.
    return subprocess.CompletedProcess(["vit-pipeline", *args], code, out.getvalue(), logs.getvalue() + err.getvalue())


# Overrides that make any recipe a few-second CPU run on a tiny model.
FAST = ("--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32",
        "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--report_to", "none")


def save_tiny_classifier(path: Path, labels: list[str], image_size: int = 32, seed: int = 0) -> Path:
    """Save a random tiny ViTForImageClassification whose `id2label` names `labels` (an output folder stand-in)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(**{**TINY_VIT, "image_size": image_size}, num_labels=len(labels),
                       id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def digits_classifier(tmp_path_factory) -> Path:
    """A random tiny ViT classifier for the ten digits ("0".."9"), saved like a training output folder."""
    return save_tiny_classifier(tmp_path_factory.mktemp("digits-classifier"), [str(d) for d in range(10)])


# Multi-label stand-in: real digits, each with the tags its shape has (1 and 3 have none: "no finding" images).
DIGIT_TAGS = ["even", "greater_than_4", "loop"]


def digit_tags(digit: int) -> list[str]:
    """The tags of a digit: even, greater than 4, drawn with a closed loop (0, 6, 8, 9)."""
    return [tag for tag, has in zip(DIGIT_TAGS, (digit % 2 == 0, digit > 4, digit in (0, 6, 8, 9)), strict=True)
            if has]


def tagged_digits(n_per_class: int = 20, seed: int = 0, image_column: str = "image", label_column: str = "tags"):
    """Digits as a `datasets.Dataset` with a `Sequence(ClassLabel(DIGIT_TAGS))` column of tags (the Hub's layout)."""
    import datasets

    rows = digits(n_per_class=n_per_class, seed=seed)
    features = datasets.Features({image_column: datasets.Image(),
                                  label_column: datasets.List(datasets.ClassLabel(names=DIGIT_TAGS))})
    return datasets.Dataset.from_dict(
        {image_column: [im for im, _ in rows], label_column: [[DIGIT_TAGS.index(t) for t in digit_tags(d)]
                                                              for _, d in rows]}, features=features)


@pytest.fixture(scope="session")
def tagged_digits_parquet(tmp_path_factory) -> Path:
    """Tagged digits as a Hub-like parquet repo: `image`, `tags` (lists of ClassLabel ids), train + validation."""
    return write_parquet_repo(tmp_path_factory.mktemp("tagged-digits"), {
        "train": tagged_digits(n_per_class=30, seed=0), "validation": tagged_digits(n_per_class=10, seed=1)})
