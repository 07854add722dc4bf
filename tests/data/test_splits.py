"""Splits and StreamSplits: one set of fields (DataSplits), so commands and the card read either the same way."""

from __future__ import annotations

from dataclasses import fields

from vit_pipeline.data.splits import DataSplits, Splits, StreamSplits


def test_both_kinds_of_splits_share_the_base_fields():
    base = [f.name for f in fields(DataSplits)]
    # Map-style only: the pixel cache, the pixel digests of the image check, the rows exclude_images dropped.
    assert [f.name for f in fields(Splits)] == [*base, "pixel_cache", "pixel_digests", "excluded_images"]
    assert [f.name for f in fields(StreamSplits)] == [*base, "train_rows"]
    stream = StreamSplits(train=None, eval=None, labels=["a", "b"], eval_split_name="validation")
    assert isinstance(stream, DataSplits) and not isinstance(stream, Splits)
    assert stream.train_rows is None and stream.skipped_images == {} and stream.multi_label is False
