"""The pixel cache's batch path: the same crops and flips as torchvision's per-image transforms, in distribution and
pixel for pixel, whole batches at once, in the training process or in a loader worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from vit_pipeline.data.batches import CachedBatches, crop_boxes
from vit_pipeline.data.prepare import prepare_dataset
from vit_pipeline.data.transforms import collate, image_spec


def _torchvision_boxes(height: int, width: int, scale: tuple[float, float], n: int) -> np.ndarray:
    crop = T.RandomResizedCrop(224, scale=scale)
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    boxes = [crop.make_params([image]) for _ in range(n)]
    return np.array([[b["top"], b["left"], b["height"], b["width"]] for b in boxes])


@pytest.mark.parametrize(("height", "width", "scale"), [(256, 341, (0.08, 1.0)), (16, 16, (0.8, 1.0)),
                                                        (400, 60, (0.08, 1.0))],
                         ids=["photo", "digit", "tall-falls-back"])
def test_crop_boxes_have_the_distribution_of_random_resized_crop(height, width, scale):
    torch.manual_seed(0)
    n = 3000
    ours = crop_boxes(np.full(n, height), np.full(n, width), scale)
    theirs = _torchvision_boxes(height, width, scale, n)
    assert ours.shape == theirs.shape == (n, 4)
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= height).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= width).all()
    # Crop area, aspect ratio and position: two-sample tests cannot tell the two apart.
    for name, a, b in (("area", ours[:, 2] * ours[:, 3], theirs[:, 2] * theirs[:, 3]),
                       ("aspect", ours[:, 3] / ours[:, 2], theirs[:, 3] / theirs[:, 2]),
                       ("top", ours[:, 0], theirs[:, 0]), ("left", ours[:, 1], theirs[:, 1])):
        assert stats.ks_2samp(a, b).pvalue > 1e-3, name
    # The center-crop fallback happens as often (the tall image fails all 10 tries now and then).
    fallback = lambda boxes: np.mean((boxes[:, 3] == width) & (boxes[:, 2] == round(width / 0.75)))  # noqa: E731
    assert abs(fallback(ours) - fallback(theirs)) < 0.03


def _cached(photo_files, data_args, train=True, resample=2):
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(resample=resample)
    _, ds = photo_files
    return prepare_dataset(ds, processor, data_args, train=train), processor


# Bilinear (ViT) and bicubic (DeiT, ConvNeXt...): the two modes the batch path calls torch's uint8 kernels for.
@pytest.mark.parametrize("resample", [2, 3])
def test_batches_are_torchvisions_crops_and_flips_pixel_for_pixel(photo_files, resample):
    from vit_pipeline.config import DataArguments

    train, processor = _cached(photo_files, DataArguments(dataset_name="x", pixel_cache=True), resample=resample)
    assert isinstance(train, CachedBatches)
    indices = list(range(len(train)))[::-1]
    torch.manual_seed(3)
    batch = collate(train.__getitems__(indices))
    assert batch["pixel_values"].shape == (len(indices), 3, 224, 224) and batch["pixel_values"].dtype == torch.uint8
    assert batch["labels"].tolist() == [train.cached[i]["label"] for i in indices]
    # The same draws again: the boxes, then the flips; each crop is what torchvision's kernels make of those.
    torch.manual_seed(3)
    heights, widths = np.array(train.cached["height"])[indices], np.array(train.cached["width"])[indices]
    boxes = crop_boxes(heights, widths, (0.08, 1.0))
    flips = torch.rand(len(indices)) < 0.5
    spec = image_spec(processor)
    for k, i in enumerate(indices):
        expected = TF.resized_crop(train._image(i), *boxes[k].tolist(), list(spec.output_size),
                                   interpolation=spec.interpolation, antialias=True)
        expected = TF.horizontal_flip(expected) if flips[k] else expected
        assert torch.equal(batch["pixel_values"][k], expected), k


def test_batches_flip_half_the_images():
    import datasets
    from torchvision.transforms import InterpolationMode

    from vit_pipeline.data.batches import BatchCrop

    # A square image and crops of its whole area: every batch image is the image or its mirror.
    image = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8)
    cached = datasets.Dataset.from_dict({"pixels": [image.numpy().tobytes()], "height": [32], "width": [32],
                                         "label": [0]})
    batches = CachedBatches(cached, BatchCrop((32, 32), InterpolationMode.BILINEAR, scale_min=1.0, flip=True))
    torch.manual_seed(0)
    out = batches.__getitems__([0] * 400)["pixel_values"]
    chw = image.permute(2, 0, 1)
    plain = sum(torch.equal(b, chw) for b in out)
    mirrored = sum(torch.equal(b, chw.flip(-1)) for b in out)
    assert plain + mirrored == 400
    assert stats.binomtest(mirrored, 400, 0.5).pvalue > 1e-3


def test_batch_path_is_kept_for_crop_and_flip_only(photo_files):
    from vit_pipeline.config import DataArguments

    assert isinstance(_cached(photo_files, DataArguments(dataset_name="x", pixel_cache=True))[0], CachedBatches)
    for extra in ({"auto_augment": "randaugment"}, {"random_erasing": 0.25}, {"random_resized_crop": False}):
        train, _ = _cached(photo_files, DataArguments(dataset_name="x", pixel_cache=True, **extra))
        assert not isinstance(train, CachedBatches), extra
        assert collate(train.__getitems__([0, 1]))["pixel_values"].shape == (2, 3, 224, 224)
    # Evaluation: whole batches of the cached model input, in order.
    evals, _ = _cached(photo_files, DataArguments(dataset_name="x", pixel_cache=True), train=False)
    assert isinstance(evals, CachedBatches)
    batch = collate(evals.__getitems__([2, 0]))
    assert torch.equal(batch["pixel_values"][1], evals[0]["pixel_values"])


def test_batches_come_out_of_a_loader_worker_too(photo_files):
    from torch.utils.data import DataLoader

    from vit_pipeline.config import DataArguments

    train, _ = _cached(photo_files, DataArguments(dataset_name="x", pixel_cache=True))
    train.__getitems__([0])  # buffers mapped in this process: the worker maps its own
    loader = DataLoader(train, batch_size=4, shuffle=True, collate_fn=collate, num_workers=1,
                        generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert sum(len(b["labels"]) for b in batches) == len(train)
    assert all(b["pixel_values"].shape[1:] == (3, 224, 224) for b in batches)


def test_workers_sized_by_the_machine_go_to_zero_with_the_pixel_cache(tmp_path):
    from vit_pipeline.config import PipelineTrainingArguments
    from vit_pipeline.config.machine import fit_workers_to_data

    unset = PipelineTrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    asked = PipelineTrainingArguments(output_dir=str(tmp_path), use_cpu=True, dataloader_num_workers=1)
    fit_workers_to_data(unset, pixel_cache=True)
    fit_workers_to_data(asked, pixel_cache=True)
    assert unset.dataloader_num_workers == 0 and not unset.dataloader_persistent_workers
    assert asked.dataloader_num_workers == 1
