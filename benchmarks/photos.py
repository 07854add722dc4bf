"""Write the benchmark's photo dataset: real photos, ImageNet-sized, JPEG-encoded inside a `datasets` dataset.

    python benchmarks/photos.py benchmarks/data/photos                 # 2,048 train + 256 validation images
    python benchmarks/photos.py benchmarks/data/photos --count 8192    # enough for 50 GPU steps of 256 per epoch

The photos are random crops of scikit-image's sample photographs (astronaut, coffee, chelsea, rocket,
immunohistochemistry, hubble_deep_field, retina; camera in grayscale), one class per photograph, resized so that the
longer side is 500 px as most ImageNet images are, and stored as JPEG bytes (quality 90) in the `image` column, as a
Hub parquet dataset stores them. Needs scikit-image (a test extra).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "camera")
LONGER_SIDE = 500


def photo(source: np.ndarray, rng: np.random.Generator) -> bytes:
    """One JPEG: a random crop (35-100% of the area, aspect 3:4 to 4:3) of `source`, longer side 500 px."""
    height, width = source.shape[:2]
    area = rng.uniform(0.35, 1.0) * height * width
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    crop_w = int(min(width, round(np.sqrt(area * aspect))))
    crop_h = int(min(height, round(np.sqrt(area / aspect))))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    image = Image.fromarray(source[top:top + crop_h, left:left + crop_w])
    scale = LONGER_SIDE / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_photos(folder: str | Path, count: int = 2048, eval_count: int = 256, seed: int = 0) -> Path:
    """Write `count` train and `eval_count` validation photos as a `save_to_disk` DatasetDict in `folder`."""
    import datasets
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    sources = [getattr(skdata, name)() for name in PHOTOS]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(PHOTOS))})

    def split(n: int) -> datasets.Dataset:
        labels = [i % len(PHOTOS) for i in range(n)]
        images = [{"bytes": photo(sources[label], rng), "path": None} for label in labels]
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    folder = Path(folder)
    datasets.DatasetDict({"train": split(count), "validation": split(eval_count)}).save_to_disk(str(folder))
    return folder


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("folder", help="where to write the dataset (save_to_disk layout)")
    cli.add_argument("--count", type=int, default=2048, help="training images (default 2048)")
    cli.add_argument("--eval_count", type=int, default=256, help="validation images (default 256)")
    cli.add_argument("--seed", type=int, default=0)
    options = cli.parse_args()
    print(write_photos(options.folder, options.count, options.eval_count, options.seed))
