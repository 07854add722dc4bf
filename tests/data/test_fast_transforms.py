"""The fast data path: decode and crop as uint8 in the loader, normalize whole batches on the device.

Its eval output must equal what `pipeline("image-classification")` feeds the model for the same files (the saved
image processor on `load_image`), and pixels must stay uint8 until the normalizer. Decoding is tested in
tests/data/test_decode.py, the pixel cache in tests/data/test_cache.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit_pipeline.data.prepare import BatchTransform, fast_dataset, prepare_dataset
from vit_pipeline.data.transforms import PixelNormalizer, build_fast_transforms, build_transforms, collate, image_spec

# Eval output vs the image processor: the same uint8 pixels go through the same fused float ops, so the results are
# equal; the tolerance only leaves room for float rounding on other platforms. One gray level is 1/255/std = 0.0078.
ATOL = 1e-6


def processors():
    from transformers import ViTImageProcessor

    return {
        "vit-224-bilinear": ViTImageProcessor(),
        "shortest-256-crop-224-bicubic": ViTImageProcessor(size={"shortest_edge": 256}, do_center_crop=True,
                                                           crop_size={"height": 224, "width": 224}, resample=3),
        "32x48-imagenet-stats": ViTImageProcessor(size={"height": 32, "width": 48}, image_mean=[0.485, 0.456, 0.406],
                                                  image_std=[0.229, 0.224, 0.225]),
    }


@pytest.mark.parametrize("pixel_cache", [False, True], ids=["decode-per-epoch", "pixel-cache"])
@pytest.mark.parametrize("name", list(processors()))
def test_eval_batches_equal_the_image_processor_on_real_photos(photo_files, name, pixel_cache):
    from transformers.image_utils import load_image

    from vit_pipeline.config import DataArguments

    processor = processors()[name]
    paths, ds = photo_files
    data_args = DataArguments(dataset_name="x", pixel_cache=pixel_cache)
    batch = collate(prepare_dataset(ds, processor, data_args, train=False).__getitems__(list(range(len(ds)))))
    assert batch["pixel_values"].dtype == torch.uint8
    ours = PixelNormalizer(image_spec(processor))(batch["pixel_values"])
    # What pipeline("image-classification") does with a file: load_image, then the saved image processor.
    expected = processor([load_image(str(p)) for p in paths], return_tensors="pt")["pixel_values"]
    assert ours.shape == expected.shape == (len(paths), 3, *image_spec(processor).output_size)
    torch.testing.assert_close(ours, expected, rtol=0, atol=ATOL)
    if pixel_cache:
        return
    # The per-image path (fast_transforms: false) agrees too, to float rounding of its unfused rescale + normalize.
    _, slow_eval = build_transforms(processor)
    slow = collate(ds.with_transform(BatchTransform(slow_eval)).__getitems__(list(range(len(ds)))))
    torch.testing.assert_close(slow["pixel_values"], expected, rtol=0, atol=1e-5)


def test_decoding_on_threads_gives_the_same_batch_in_order(photo_files):
    # Inference on a CPU-only machine decodes each batch's images on threads (`DecodeTransform(threads=...)`).
    from transformers import ViTImageProcessor

    _, ds = photo_files
    _, eval_transform = build_fast_transforms(ViTImageProcessor())
    indices = list(range(len(ds)))[::-1]
    one = collate(fast_dataset(ds, eval_transform).__getitems__(indices))
    threaded = fast_dataset(ds, eval_transform, threads=3)
    batch = collate(threaded.__getitems__(indices))
    assert torch.equal(batch["pixel_values"], one["pixel_values"]) and torch.equal(batch["labels"], one["labels"])
    # The transform still pickles into loader workers (its threads are the process's, not the transform's).
    import pickle

    assert pickle.loads(pickle.dumps(threaded._format_kwargs["transform"])).threads == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_normalizing_on_the_gpu_gives_the_processor_output(photo_files):
    from transformers.image_utils import load_image

    processor = processors()["vit-224-bilinear"]
    paths, ds = photo_files
    batch = collate(fast_dataset(ds, build_fast_transforms(processor)[1]).__getitems__(list(range(len(ds)))))
    ours = PixelNormalizer(image_spec(processor)).cuda()(batch["pixel_values"].cuda()).cpu()
    expected = processor([load_image(str(p)) for p in paths], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, expected, rtol=0, atol=ATOL)


def test_pixels_stay_uint8_until_the_normalizer(photo_files):
    from transformers import ViTImageProcessor
    from transformers.image_utils import load_image

    from vit_pipeline.config import DataArguments

    processor = ViTImageProcessor()
    paths, ds = photo_files
    # The crops draw from torch's generator: seeded, so the mean-colour check below does not depend on test order.
    torch.manual_seed(0)
    data_args = DataArguments(dataset_name="x", crop_scale_min=0.3)
    train_transform, _ = build_fast_transforms(processor, data_args)
    train = fast_dataset(ds, train_transform)
    rows = train.__getitems__(list(range(len(ds))))
    assert all(r["pixel_values"].dtype == torch.uint8 and r["pixel_values"].shape == (3, 224, 224) for r in rows)
    batch = collate(rows)
    assert batch["pixel_values"].dtype == torch.uint8 and batch["labels"].dtype == torch.long
    pixels = PixelNormalizer(image_spec(processor))(batch["pixel_values"])
    assert pixels.dtype == torch.float32 and -1.0 <= pixels.min() < 0 < pixels.max() <= 1.0
    # The train crop is random (two epochs see different crops) and is a crop of the photo, not of something else:
    # every crop's mean color is within the photo's range of colors.
    again = collate(train.__getitems__(list(range(len(ds)))))["pixel_values"]
    assert not torch.equal(again, batch["pixel_values"])
    full = torch.tensor([np.asarray(load_image(str(p)), dtype=np.float64).mean() for p in paths], dtype=torch.float32)
    assert torch.allclose(batch["pixel_values"].float().mean(dim=(1, 2, 3)), full, atol=60)
    # Normalizing a float batch again is a no-op (the per-image path's batches pass through the Trainer unchanged).
    assert PixelNormalizer(image_spec(processor))(pixels) is pixels


def test_fast_transforms_use_the_augmentation_switches():
    from torchvision.transforms import v2 as T
    from transformers import ViTImageProcessor

    from vit_pipeline.config import DataArguments

    processor = ViTImageProcessor()
    plain = DataArguments(dataset_name="x", random_resized_crop=False, horizontal_flip=False)
    train, evals = build_fast_transforms(processor, plain)
    kinds = [type(t) for t in train.transforms]
    assert T.RandomResizedCrop not in kinds and T.RandomHorizontalFlip not in kinds and T.Resize in kinds
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    assert torch.equal(train(image), evals(image))  # no augmentation: train = eval
    default_train, _ = build_fast_transforms(processor, DataArguments(dataset_name="x"))
    kinds = [type(t) for t in default_train.transforms]
    assert T.RandomResizedCrop in kinds and T.RandomHorizontalFlip in kinds
    assert default_train(image).dtype == torch.uint8
