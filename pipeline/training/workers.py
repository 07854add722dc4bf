"""Loader workers stopped when a run is over, not left to the garbage collector.

A run's loaders keep live iterators after training: persistent workers (the default with loader workers) stay up
between epochs by design, and a run stopped at `max_steps`, by early stopping or by an error leaves its training
iterator unfinished (a stream's too). Both sit in reference cycles (the callback handler, accelerate's gradient
state), so the garbage collector frees them later, in the middle of whatever the process does next, and each
shutdown then waits up to 5 s per worker (`join(timeout=5)`): measured 10 s in every Accelerate-loop run with one
loader worker (its train and eval loaders), inside the report's plotting.
"""

from __future__ import annotations

from transformers import TrainerCallback


class CloseLoaderWorkers(TrainerCallback):
    """Remembers the run's train and eval loaders (both backends hand them to every event), so that `close()` can
    stop their workers once the run is over, however it ended."""

    def __init__(self):
        self.loaders: list = []

    def _remember(self, *loaders) -> None:
        self.loaders += [loader for loader in loaders if loader is not None and loader not in self.loaders]

    def on_train_begin(self, args, state, control, train_dataloader=None, eval_dataloader=None, **kwargs):
        self._remember(train_dataloader, eval_dataloader)
        return control

    def on_evaluate(self, args, state, control, eval_dataloader=None, **kwargs):
        # The Trainer builds its eval loader at the first evaluation.
        self._remember(eval_dataloader)
        return control

    def close(self) -> None:
        """Stop the remembered loaders' workers now."""
        for loader in self.loaders:
            close_workers(loader)
        self.loaders = []


def close_workers(loader) -> None:
    """Shut the workers of a loader's live iterator down now (a torch or torchdata loader, or accelerate's wrapper of
    one; a no-op without workers or without a live iterator)."""
    base = getattr(loader, "base_dataloader", loader)
    iterator = getattr(base, "_iterator", None)
    if iterator is None:
        return
    if hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    base._iterator = None
