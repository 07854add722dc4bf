"""`exclude_images: A/exclude.txt`: drop the images an audit flagged, before anything else reads the data.

The file holds one image per line, as `vit-pipeline audit` writes it: the image's file path when every image has
its own file (an imagefolder), else `split:row`, the row of the dataset split as loaded (before any held-out split
or subsampling). Blank lines and lines starting with `#` are skipped. Nothing is deleted from the data itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict

from vit_pipeline import PipelineError

logger = logging.getLogger(__name__)

# The column `load_splits(..., with_source=True)` adds: each row's `split:row` in the source data (the audit's ids).
SOURCE_COLUMN = "_source_row"


def image_paths(ds: Dataset, column: str) -> list[str | None]:
    """The file path of every image cell of `ds[column]`, read from Arrow (no image is decoded); None without one."""
    cells = ds.select_columns([column]).with_format("arrow")[column]
    if not hasattr(cells.type, "get_field_index") or cells.type.get_field_index("path") < 0:
        return [None] * len(ds)
    return cells.combine_chunks().field("path").to_pylist()


@dataclass
class Exclusions:
    """The images listed in an exclude file, and which of them were found and dropped."""

    path: str
    entries: set[str]
    found: set[str] = field(default_factory=set)
    dropped: dict[str, int] = field(default_factory=dict)


def read_exclusions(path: str) -> Exclusions:
    """Read an exclude file (one path or `split:row` per line).

    Raises:
        PipelineError: the file cannot be read.
    """
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as err:
        raise PipelineError(f"cannot read exclude_images {path}: {err.strerror}; give the exclude.txt that "
                            "`vit-pipeline audit` wrote") from err
    return Exclusions(path, {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")})


def exclude_images(raw: DatasetDict, image_column: str, exclusions: Exclusions) -> DatasetDict:
    """Every split of `raw` without the rows `exclusions` lists (by file path or `split:row`), counted per split.

    Raises:
        PipelineError: the file names images that are in no split (one line: how many, and the first).
    """
    kept = {}
    for split, ds in raw.items():
        paths = image_paths(ds, image_column)
        drop = [row for row, p in enumerate(paths) if p in exclusions.entries or f"{split}:{row}" in exclusions.entries]
        exclusions.found |= {p for p in paths if p in exclusions.entries}
        exclusions.found |= {f"{split}:{row}" for row in drop} & exclusions.entries
        if drop:
            exclusions.dropped[split] = len(drop)
            gone = set(drop)
            ds = ds.select([row for row in range(len(ds)) if row not in gone])
        kept[split] = ds
    unknown = sorted(exclusions.entries - exclusions.found)
    if unknown:
        raise PipelineError(f"exclude_images {exclusions.path} names {len(unknown)} image(s) that are not in the data "
                            f"(first: {unknown[0]}): write it again with `vit-pipeline audit` on this data, or remove "
                            "those lines")
    logger.info("Excluded %d image(s) listed in %s (%s)", sum(exclusions.dropped.values()), exclusions.path,
                ", ".join(f"{split} {n}" for split, n in exclusions.dropped.items()) or "none found")
    return DatasetDict(kept)


def with_source_rows(raw: DatasetDict) -> DatasetDict:
    """Every split with a `SOURCE_COLUMN` naming each row `split:row` (the audit's id of an image with no file)."""
    return DatasetDict({split: ds.add_column(SOURCE_COLUMN, [f"{split}:{row}" for row in range(len(ds))])
                        for split, ds in raw.items()})
