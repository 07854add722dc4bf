"""Property-based: image folders with damaged and unusual files (truncated, empty, wrong extension, decompression
bombs, EXIF-rotated, 16-bit, animated, CMYK) load with the bad ones skipped or named in one line, never a traceback;
the unusual but valid ones decode like any other, and train."""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import FAST, digits, save_tiny_vit, write_imagefolder
from vit_pipeline import PipelineError
from vit_pipeline.config import DataArguments
from vit_pipeline.data.load import load_splits


def _photo(seed: int, size: int = 24) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8))


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels, with one pixel of data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
            + chunk(b"IEND", b""))


def _exif_rotated(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    return _encode(_photo(seed), "JPEG", exif=exif)


def _animated(seed: int) -> bytes:
    frames = [_photo(seed).convert("P"), _photo(seed + 1).convert("P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


# kind -> (file extension, bytes from a seed); valid ones must load and decode, broken ones must be reported.
VALID = {
    "exif_rotated": ("jpg", _exif_rotated),
    "png16": ("png", lambda s: _encode(Image.fromarray((np.arange(24 * 28).reshape(24, 28) * (s + 7)).astype(
        np.uint16) * 40), "PNG")),
    "animated_gif": ("gif", _animated),
    "cmyk_jpeg": ("jpg", lambda s: _encode(_photo(s).convert("CMYK"), "JPEG")),
    "rgba_png": ("png", lambda s: _encode(_photo(s).convert("RGBA"), "PNG")),
    "png_named_jpg": ("jpg", lambda s: _encode(_photo(s), "PNG")),
}
BROKEN = {
    "truncated_jpeg": ("jpg", lambda s: _encode(_photo(s), "JPEG")[: 40 + s % 200]),
    "truncated_png": ("png", lambda s: _encode(_photo(s), "PNG")[: 30 + s % 100]),
    "empty": ("png", lambda s: b""),
    "text_as_png": ("png", lambda s: "not an image ✗".encode() * (1 + s % 3)),
    "bomb": ("png", lambda s: _bomb(40000 + s, 40000)),
}
kinds = st.lists(st.tuples(st.sampled_from(sorted(VALID) + sorted(BROKEN)), st.integers(0, 1000)),
                 min_size=1, max_size=4)


def _folder(root: Path, odd: list[tuple[str, int]]) -> Path:
    write_imagefolder(root, {"train": digits(n_per_class=6, classes=2)})
    for i, (kind, seed) in enumerate(odd):
        ext, make = {**VALID, **BROKEN}[kind]
        (root / "train" / str(i % 2) / f"odd-{i}-{kind}.{ext}").write_bytes(make(seed))
    return root / "train"


def test_each_hostile_kind_is_what_the_properties_assume():
    for _, (_, make) in VALID.items():
        with Image.open(io.BytesIO(make(3))) as image:
            image.load()
    for _, (_, make) in BROKEN.items():
        with pytest.raises(Exception):  # noqa: B017 (PIL raises several types)
            with Image.open(io.BytesIO(make(3))) as image:
                image.load()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd=kinds)
def test_damaged_images_are_skipped_or_named_and_valid_ones_decode(odd):
    from vit_pipeline.data.prepare import prepare_dataset

    broken = sum(kind in BROKEN for kind, _ in odd)
    with tempfile.TemporaryDirectory() as folder:
        train_dir = _folder(Path(folder), odd)
        try:
            splits = load_splits(DataArguments(train_dir=str(train_dir), bad_images="skip", train_val_split=0.25),
                                 seed=0)
        except PipelineError as err:
            pytest.fail(f"bad_images=skip still failed: {err}")
        assert sum(splits.skipped_images.values()) == broken
        assert len(splits.train) + len(splits.eval) + len(splits.test) == 12 + len(odd) - broken
        # Every image left decodes, through the fast path, to the model's input size.
        processor = _processor()
        for ds, train in ((splits.train, True), (splits.eval, False)):
            prepared = prepare_dataset(ds, processor, DataArguments(train_dir=str(train_dir)), train=train)
            for row in range(len(prepared)):
                pixels = prepared[row]["pixel_values"]
                assert tuple(pixels.shape) == (3, 32, 32)
        if broken:
            with pytest.raises(PipelineError, match=r"unreadable image in split .* set bad_images: skip"):
                load_splits(DataArguments(train_dir=str(train_dir), train_val_split=0.25), seed=0)


_PROCESSOR = []


def _processor():
    if not _PROCESSOR:
        from transformers import ViTImageProcessor

        _PROCESSOR.append(ViTImageProcessor(size={"height": 32, "width": 32}))
    return _PROCESSOR[0]


@pytest.mark.slow
def test_unusual_valid_images_train_and_damaged_ones_are_skipped(tmp_path):
    from vit_pipeline.cli import main

    odd = [(kind, 5) for kind in VALID] * 2 + [(kind, 9) for kind in BROKEN]
    train_dir = _folder(tmp_path / "data", odd)
    model = save_tiny_vit(tmp_path / "model", num_labels=2)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model_name_or_path", str(model), "--train_dir", str(train_dir), "--output_dir", str(out),
              *FAST, "--num_train_epochs", "1", "--bad_images", "skip", "--train_val_split", "0.25"])
        raise SystemExit(0)
    assert exit_info.value.code == 0
    assert (out / "model.safetensors").is_file()
    import json

    results = json.loads((out / "all_results.json").read_text())
    assert sum(v for k, v in results.items() if k.endswith("_skipped_images")) == len(BROKEN)


def _huge_jpeg(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is rewritten to claim `width` x `height`."""
    data = bytearray(_encode(_photo(1), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def test_the_fast_decoder_refuses_a_decompression_bomb_before_allocating_it():
    from vit_pipeline.data.decode import _header_size, decode_rgb

    # Header sizes agree with PIL's on ordinary files (the check must never misread a normal image).
    for data in (_encode(_photo(2), "JPEG"), _encode(_photo(3), "PNG"), _exif_rotated(4),
                 _encode(_photo(5).convert("L"), "JPEG", progressive=True)):
        with Image.open(io.BytesIO(data)) as image:
            assert _header_size(data) == image.size
    for bomb in (_bomb(60000, 60000), _huge_jpeg(65000, 65000)):
        with pytest.raises(PipelineError, match=r"an image claims \d+ x \d+ pixels, over PIL's limit .* "
                                                r"decompression bomb"):
            decode_rgb(bomb)
