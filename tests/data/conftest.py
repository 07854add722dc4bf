"""Fixtures the data tests share."""

from __future__ import annotations

import pytest
from PIL import Image

# Photos of different sizes, in RGB and in grayscale (camera): rocket's 427x640 gives an odd center-crop margin.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field")


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory) -> list:
    """The photos as JPEG and PNG files (what `pipeline()` reads) and a datasets Dataset of their bytes."""
    import datasets
    from skimage import data as skdata

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skdata, name)())
        for fmt, suffix in (("JPEG", "jpg"), ("PNG", "png")):
            path = folder / f"{name}.{suffix}"
            image.save(path, format=fmt)
            paths.append(path)
    # The encoded bytes inside the dataset, as a Hub parquet or save_to_disk dataset holds them.
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": p.read_bytes(), "path": None} for p in paths], "label": list(range(len(paths)))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    return paths, ds
