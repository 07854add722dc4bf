"""Exact duplicates (the same decoded pixels) within a split and across splits, from a digest of every image's pixels.

The digests are taken while the image check (`vit_pipeline.data.check`) or the pixel cache pass
(`vit_pipeline.data.cache`) decodes the images anyway: counting duplicates costs no decoding pass of its own.
The check decodes JPEG files at 1/8 scale (its draft mode); such digests carry the `DRAFT` prefix, and a group of
them is confirmed on the full-scale pixels of its few members before it counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import xxhash  # a dependency of datasets

# Prefix of a digest of a JPEG decoded at reduced scale: equal ones are confirmed at full scale before they count.
DRAFT = "~"


def pixel_digest(pixels, shape: tuple, mode: str = "", draft: bool = False) -> str:
    """A 128-bit xxh3 digest of decoded pixels, their shape and mode (the same image in L and RGB differs).

    xxh3 (the `xxhash` that datasets depends on) hashes at memory speed, far below the cost of decoding (blake2b
    took a sixth of a PNG decode); a chance collision of 128-bit digests is out of reach for any dataset.

    Args:
        pixels: the raw pixels: bytes (`PIL.Image.tobytes()`) or a C-contiguous array (hashed in place, no copy).
        shape: their shape or (width, height).
        mode: the PIL mode, or "" for RGB tensors.
        draft: the pixels are a reduced-scale JPEG decode (the digest gets the `DRAFT` prefix).
    """
    digest = xxhash.xxh3_128(f"{mode}{tuple(shape)}".encode())
    digest.update(pixels)
    return (DRAFT if draft else "") + digest.hexdigest()


def full_digest(cell) -> str:
    """The digest of an image cell's full-scale RGB pixels (what `decode_rgb` gives the model)."""
    from vit_pipeline.data.decode import decode_rgb  # torch: only when a draft group needs confirming

    pixels = decode_rgb(cell).contiguous()
    return pixel_digest(pixels.numpy(), tuple(pixels.shape))


def confirm_in(named: dict) -> Callable[[str, int], str]:
    """A `confirm` for `find_exact_duplicates`: the full-scale digest of row `row` of `named[split]` (a Dataset)."""
    import datasets

    raw = {split: ds.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
           for split, ds in named.items()}
    return lambda split, row: full_digest(raw[split][row]["image"])


@dataclass
class ExactDuplicates:
    """Groups of images with the same pixels, and what they mean per split.

    The first split of the digests is the training split; every other one (eval, test) is compared with it.
    """

    # Each group: two or more (split, row) with the same pixels.
    groups: list[list[tuple[str, int]]] = field(default_factory=list)
    # Per split: images that copy another image of the same split (every member of a group but its first).
    within: dict[str, int] = field(default_factory=dict)
    # Per split other than train: its images with an exact copy in train (leaked into the evaluation).
    leaked: dict[str, int] = field(default_factory=dict)
    # Images per split that were compared.
    sizes: dict[str, int] = field(default_factory=dict)

    def sentences(self) -> list[str]:
        """The counts in words: "12 eval images are exact copies of train images" (nothing when there are none)."""
        train = next(iter(self.sizes), "train")
        def copies(n: int, split: str, of_one: str, of_many: str) -> str:
            return (f"1 {split} image is an exact copy of {of_one}" if n == 1 else
                    f"{n} {split} images are exact copies of {of_many}")

        out = [copies(n, split, f"a {train} image", f"{train} images") for split, n in self.leaked.items() if n]
        out += [copies(n, split, f"another {split} image", f"other {split} images")
                for split, n in self.within.items() if n]
        return out


def find_exact_duplicates(digests: dict[str, list[str]], confirm: Callable[[str, int], str] | None = None
                          ) -> ExactDuplicates:
    """Group the images of every split by their pixel digest.

    Args:
        digests: {split: one digest per row}; the first split is train (what the others are checked against).
        confirm: (split, row) -> the full-scale digest (`full_digest`); asked only for members of a group of
            `DRAFT` digests. None: draft digests are taken as they are.

    Returns:
        The groups of two or more, the copies within each split, and the other splits' images copied from train.
    """
    by_digest: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for split, values in digests.items():
        for row, value in enumerate(values):
            if value:
                by_digest[value].append((split, row))
    groups = []
    for value, members in by_digest.items():
        if len(members) < 2:
            continue
        if value.startswith(DRAFT) and confirm is not None:
            # Equal at 1/8 scale: decode the few members at full scale and regroup.
            regrouped: dict[str, list[tuple[str, int]]] = defaultdict(list)
            for member in members:
                regrouped[confirm(*member)].append(member)
            groups += [group for group in regrouped.values() if len(group) > 1]
        else:
            groups.append(members)
    splits = list(digests)
    within, leaked = dict.fromkeys(splits, 0), dict.fromkeys(splits[1:], 0)
    for group in groups:
        in_split = defaultdict(int)
        for split, _ in group:
            in_split[split] += 1
        for split, n in in_split.items():
            within[split] += n - 1
            if split != splits[0] and in_split.get(splits[0]):
                leaked[split] += n
    return ExactDuplicates(groups=groups, within=within, leaked=leaked,
                           sizes={split: len(values) for split, values in digests.items()})
