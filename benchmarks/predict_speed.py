"""Images/s of `vit-pipeline predict` on a folder of photos against `pipeline("image-classification")` in a loop.

    python benchmarks/photos.py benchmarks/data/photos --count 1024          # if not there yet
    python benchmarks/predict_speed.py benchmarks/data/photos-files --count 256

Writes `--count` validation photos of the benchmark's photo set as JPEG files into FOLDER (and a tiny 224 px ViT with
random weights beside them, unless `--model` names one), then times, on the same files, in this process:
`pipeline(...)` called once per file (batch 1, as users call it), `pipeline(files, batch_size=32)`, and
`vit-pipeline predict MODEL FOLDER` (its own summary line gives its images/s). Every figure is wall time after one
untimed warm-up call.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent


def write_files(folder: Path, count: int) -> list[str]:
    """The first `count` validation photos of benchmarks/data/photos as JPEG files (their stored bytes, unchanged)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    photos = datasets.load_from_disk(str(BENCHMARKS / "data" / "photos"))["validation"]
    photos = photos.cast_column("image", datasets.Image(decode=False))
    paths = []
    for i, row in enumerate(photos.select(range(min(count, len(photos))))):
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(row["image"]["bytes"])
        paths.append(str(path))
    return paths


def write_model(folder: Path) -> Path:
    """benchmarks/models/vit-tiny-224 with random weights and the photo set's 8 labels, saved as a trained model."""
    from transformers import AutoConfig, AutoImageProcessor, ViTForImageClassification

    labels = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
              "camera"]
    source = BENCHMARKS / "models" / "vit-tiny-224"
    config = AutoConfig.from_pretrained(source, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                        label2id={n: i for i, n in enumerate(labels)})
    ViTForImageClassification(config).save_pretrained(folder)
    AutoImageProcessor.from_pretrained(source).save_pretrained(folder)
    return folder


def rate(call, images: int) -> float:
    """Images/s of `call()` over `images` images, after one untimed call."""
    call()
    start = time.perf_counter()
    call()
    return images / (time.perf_counter() - start)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("folder")
    cli.add_argument("--count", type=int, default=256)
    cli.add_argument("--model", default=None, help="a trained model folder (default: a tiny random ViT)")
    options = cli.parse_args()
    folder = Path(options.folder)
    paths = write_files(folder / "images", options.count)
    model = options.model or str(write_model(folder / "model"))

    from transformers import pipeline

    from vit_pipeline.commands import predict

    classifier = pipeline("image-classification", model=model, device="cpu")
    figures = {
        "pipeline(), one call per file": rate(lambda: [classifier(p) for p in paths], len(paths)),
        "pipeline(files, batch_size=32)": rate(lambda: classifier(paths, batch_size=32), len(paths)),
        "vit-pipeline predict": rate(lambda: predict.main([model, str(folder / "images"), "--output",
                                                           str(folder / "predictions.csv")]), len(paths)),
    }
    ours = figures["vit-pipeline predict"]
    for name, value in figures.items():
        print(f"{name:<34}{value:>10,.1f} images/s" + (f"   predict: {ours / value:.2f}x" if value != ours else ""))


if __name__ == "__main__":
    main()
