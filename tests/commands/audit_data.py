"""Real digits with planted faults for the audit tests: flipped labels, exact and near copies (re-encoded JPEG,
resized) across train and eval, blank and dark images, a starved class; and a clean set to train the embedder on."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32  # digits scaled up from 8 x 8, dark ink on light paper, so that resizing and JPEG change real pixels


def digit_images(seed: int = 0) -> list[tuple[Image.Image, int]]:
    """All 1,797 scikit-learn digits as 32 x 32 grayscale images (ink dark on light paper), shuffled."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rows = [(Image.fromarray(np.round(255 - image * (255 / 16)).astype(np.uint8), mode="L")
             .resize((SIZE, SIZE), Image.BILINEAR), int(label)) for image, label in zip(data.images, data.target,
                                                                                         strict=True)]
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]


@dataclass
class Planted:
    """Where the faults are (file paths, as the audit's exclude.txt names imagefolder images)."""

    root: Path
    flipped: list[str] = field(default_factory=list)
    exact: list[str] = field(default_factory=list)  # eval files that are byte copies of train files
    near: list[str] = field(default_factory=list)  # eval files re-encoded or resized from train images
    dark: list[str] = field(default_factory=list)
    blank: list[str] = field(default_factory=list)
    starved: str = "9"


def _save(image: Image.Image, root: Path, split: str, label: int, name: str, fmt: str = "png") -> str:
    folder = root / split / str(label)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    image.save(path, quality=85) if fmt == "jpg" else image.save(path)
    return str(path)


def write_planted(root: Path, rows: list[tuple[Image.Image, int]], n_eval: int = 150, seed: int = 1) -> Planted:
    """An imagefolder (train / validation) of `rows` with faults planted; returns where they are."""
    rng = np.random.default_rng(seed)
    planted = Planted(root)
    evals, train = rows[:n_eval], rows[n_eval:]
    # A starved class: only 4 training images of 9.
    nines = [i for i, (_, digit) in enumerate(train) if digit == 9]
    train = [row for i, row in enumerate(train) if row[1] != 9 or i in nines[:4]]
    train_paths = []
    flip = set(rng.choice(len(train), size=len(train) // 20, replace=False).tolist())
    for i, (image, digit) in enumerate(train):
        label = (digit + int(rng.integers(1, 10))) % 10 if i in flip else digit
        path = _save(image, root, "train", label, f"t{i:04d}")
        train_paths.append((path, image, digit))
        if i in flip:
            planted.flipped.append(path)
    for i, (image, digit) in enumerate(evals):
        _save(image, root, "validation", digit, f"v{i:04d}")
    # Copies of train images (not flipped ones) in eval: 8 exact (the same file), 8 JPEG re-encoded, 8 resized.
    sources = [p for p in train_paths if p[0] not in planted.flipped][:24]
    for n, (path, image, digit) in enumerate(sources):
        if n < 8:
            target = root / "validation" / str(digit) / f"copy{n}.png"
            shutil.copyfile(path, target)
            planted.exact.append(str(target))
        elif n < 16:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            planted.near.append(_save(Image.open(buffer), root, "validation", digit, f"jpeg{n}", "jpg"))
        else:
            planted.near.append(_save(image.resize((SIZE - 6, SIZE - 6), Image.BICUBIC), root, "validation", digit,
                                      f"resized{n}"))
    # Dark copies and blank images in train.
    for n, (_, image, digit) in enumerate(train_paths[-3:]):
        planted.dark.append(_save(Image.fromarray((np.asarray(image) * 0.12).astype(np.uint8)), root, "train",
                                  digit, f"dark{n}"))
    for n in range(3):
        planted.blank.append(_save(Image.new("L", (SIZE, SIZE), 250), root, "train", n, f"blank{n}"))
    return planted
