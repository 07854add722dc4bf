"""Write a large generated imagefolder, to measure start-up (listing, checking, preparing) against the data's size.

    python benchmarks/folder.py benchmarks/data/folder-20k --count 20000
    vit-pipeline benchmark recipes/quickstart.yaml --dataset_name benchmarks/data/folder-20k --steps 5
    python benchmarks/folder.py benchmarks/data/pngs --count 2304 --format png   # the small-PNG benchmark

`root/train/<class>/<n>.jpg` (and 10% as `root/validation/...`): random 128 px crops of scikit-image's sample photos,
one class per photo, JPEG quality 90. The benchmark prints the start-up line (images loaded and checked, ms per image,
time to the first batch); run it twice to see the second run reuse datasets' cache. Needs scikit-image (a test extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "camera")


def write_folder(root: str | Path, count: int = 20000, size: int = 128, seed: int = 0,
                 image_format: str = "jpg") -> Path:
    """Write `count` JPEGs (PNGs with `image_format="png"`) as a train/validation imagefolder under `root` (90/10%)."""
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    sources = [np.asarray(Image.fromarray(getattr(skdata, name)()).convert("RGB")) for name in PHOTOS]
    root = Path(root)
    for i in range(count):
        label = i % len(PHOTOS)
        source = sources[label]
        height, width = source.shape[:2]
        side = int(rng.integers(size, min(height, width) + 1))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = Image.fromarray(source[top:top + side, left:left + side]).resize((size, size))
        split = "validation" if i % 10 == 9 else "train"
        folder = root / split / PHOTOS[label]
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / f"{i:06d}.{image_format}", **({"quality": 90} if image_format == "jpg" else {}))
    return root


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("folder")
    cli.add_argument("--count", type=int, default=20000)
    cli.add_argument("--size", type=int, default=128)
    cli.add_argument("--format", choices=("jpg", "png"), default="jpg",
                     help="image files (png: the small-PNG benchmark of benchmarks/pngs-vit-tiny-128.yaml)")
    options = cli.parse_args()
    print(write_folder(options.folder, options.count, options.size, image_format=options.format))
