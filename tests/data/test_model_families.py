"""Every model family's image processor, reproduced by the fast uint8 path and the per-image path.

For a tiny random checkpoint of each family (saved and reloaded with `AutoImageProcessor`, as a Hub id is), eval
batches must equal what `pipeline("image-classification")` feeds the model for the same real photos: the saved
processor on `load_image`. ConvNeXt and ResNet resize by `shortest_edge` with `crop_pct` (and warp from 384 px up),
DINOv2 resizes the shortest edge then crops, BEiT and DeiT resize then crop, EfficientNet divides by std twice
(`include_top`) and may rescale to [-1, 1] (`rescale_offset`).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.conftest import FAMILIES, tiny_family
from vit_pipeline.data.prepare import BatchTransform, prepare_dataset
from vit_pipeline.data.transforms import PixelNormalizer, build_transforms, collate, image_spec

# rocket (427x640) gives odd resize and crop margins; camera is grayscale.
PHOTOS = ("astronaut", "rocket", "camera", "chelsea")


def variants() -> dict:
    """Each family's processor, plus the rules a tiny default does not reach."""
    from transformers import ConvNextImageProcessor, EfficientNetImageProcessor

    out = {family: tiny_family(family)[1] for family in FAMILIES}
    out["convnext-384-warp"] = ConvNextImageProcessor(size={"shortest_edge": 384})
    out["resnet-50-224"] = ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875, resample=3,
                                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    out["efficientnet-offset-crop"] = EfficientNetImageProcessor(size={"height": 40, "width": 40}, do_center_crop=True,
                                                                 crop_size={"height": 32, "width": 32},
                                                                 rescale_offset=True, include_top=False)
    return out


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    import datasets
    from skimage import data as skdata

    folder = tmp_path_factory.mktemp("family-photos")
    paths = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skdata, name)())
        for fmt, suffix in (("JPEG", "jpg"), ("PNG", "png")):
            paths.append(folder / f"{name}.{suffix}")
            image.save(paths[-1], format=fmt)
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": p.read_bytes(), "path": None} for p in paths], "label": list(range(len(paths)))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}))
    return paths, ds


@pytest.mark.parametrize("name", list(variants()))
def test_eval_batches_equal_each_family_processor_on_real_photos(photo_files, name, tmp_path):
    from transformers import AutoImageProcessor
    from transformers.image_utils import load_image

    from vit_pipeline.config import DataArguments

    # Through save_pretrained / AutoImageProcessor, as the pipeline loads a checkpoint's processor.
    variants()[name].save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    paths, ds = photo_files
    expected = processor([load_image(str(p)) for p in paths], return_tensors="pt")["pixel_values"]
    assert expected.shape[-2:] == image_spec(processor).output_size
    for pixel_cache in (False, True):
        data_args = DataArguments(dataset_name="x", pixel_cache=pixel_cache)
        batch = collate(prepare_dataset(ds, processor, data_args, train=False).__getitems__(list(range(len(ds)))))
        assert batch["pixel_values"].dtype == torch.uint8
        ours = PixelNormalizer(image_spec(processor))(batch["pixel_values"])
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    # The per-image path (fast_transforms: false) agrees too.
    slow = collate(ds.with_transform(BatchTransform(build_transforms(processor)[1])).__getitems__(list(range(len(ds)))))
    torch.testing.assert_close(slow["pixel_values"], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_train_batches_have_the_model_input_size(photo_files, family):
    from vit_pipeline.config import DataArguments

    _, processor = tiny_family(family)
    _, ds = photo_files
    rows = prepare_dataset(ds, processor, DataArguments(dataset_name="x"), train=True).__getitems__([0, 1])
    assert all(tuple(r["pixel_values"].shape[-2:]) == image_spec(processor).output_size for r in rows)
