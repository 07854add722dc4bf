"""What both backends need to train from a stream: a resumable loader, and its state saved with every checkpoint.

The training stream (`vit_pipeline.data.stream`) is already this process's share of the shards, so the loader is not
sharded again by accelerate: it is a torchdata `StatefulDataLoader`, whose `state_dict` gathers the position of every
loader worker in its shards (datasets' `IterableDataset.state_dict`). Each process writes its own state into the
checkpoint (`stream_state-<rank>.pt`), and a resumed run continues with the next unseen rows instead of reading the
stream again from its start. Rows sitting in the shuffle buffer at save time are not replayed (datasets' rule): a
resumed run never sees a row twice in one epoch, and may miss up to `shuffle_buffer_size` of them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from vit_pipeline import PipelineError

logger = logging.getLogger(__name__)

STREAM_STATE = "stream_state-{rank}.pt"


def is_stream(dataset) -> bool:
    """True for a datasets `IterableDataset` (the streaming path)."""
    try:
        from datasets import IterableDataset
    except ImportError:  # pragma: no cover (datasets is a dependency)
        return False
    return isinstance(dataset, IterableDataset)


def _stateful_loader_class():
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader
    except ImportError as err:
        raise PipelineError("streaming needs torchdata (the resumable loader): pip install 'vit-pipeline[stream]'"
                            ) from err
    return StatefulDataLoader


def stream_loader(dataset, batch_size: int, collate_fn, num_workers: int, pin_memory: bool = False,
                  prefetch_factor: int | None = None, drop_last: bool = False):
    """A resumable loader over this process's stream; workers are capped at its shards (one reads each shard).

    The loader's `set_epoch(epoch)` reseeds the shuffle for each pass over the stream, except for the pass a
    restored state resumes, which keeps the saved epoch's order.
    """
    base = _stateful_loader_class()
    shards = max(1, int(getattr(dataset, "num_shards", None) or dataset.n_shards))
    workers = min(num_workers, shards)
    if workers < num_workers:
        logger.info("Streaming: %d loader worker(s), one per shard of this process (%d asked)", workers, num_workers)

    class StreamLoader(base):
        resumed_epoch: int | None = None

        def set_epoch(self, epoch: int) -> None:
            if self.resumed_epoch is not None:
                epoch, self.resumed_epoch = self.resumed_epoch, None
            self.dataset.set_epoch(epoch)

    return StreamLoader(dataset, batch_size=batch_size, collate_fn=collate_fn, num_workers=workers,
                        pin_memory=pin_memory, prefetch_factor=prefetch_factor if workers > 0 else None,
                        persistent_workers=False, drop_last=drop_last)


def save_stream_state(loader, folder: str | os.PathLike, rank: int) -> None:
    """Write `loader`'s position (every worker's shard and row) into checkpoint `folder` for process `rank`."""
    if loader is None or not hasattr(loader, "state_dict"):
        return
    torch.save({"loader": loader.state_dict(), "epoch": getattr(loader.dataset, "epoch", 0)},
               Path(folder) / STREAM_STATE.format(rank=rank))


def load_stream_state(loader, folder: str | os.PathLike, rank: int) -> bool:
    """Restore `loader`'s position from checkpoint `folder`; False (and a warning) when it holds none."""
    path = Path(folder) / STREAM_STATE.format(rank=rank)
    if loader is None or not path.is_file():
        logger.warning("%s holds no stream position for process %d: the stream starts again from its beginning",
                       folder, rank)
        return False
    saved = torch.load(path, weights_only=False)
    loader.load_state_dict(saved["loader"])
    loader.resumed_epoch = int(saved.get("epoch", 0))
    logger.info("Streaming: resuming the stream where %s left it (epoch %d of the stream)", Path(folder).name,
                loader.resumed_epoch)
    return True
