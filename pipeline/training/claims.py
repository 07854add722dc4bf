"""Many workers on one folder of runs (`vit-pipeline compare` started on several GPUs or machines): each takes the
next run no one holds, through the output-folder lock every run already takes (`config/output_dir.py`).

A worker holds a run's folder from before its training until its results are written, so no other worker trains it
meanwhile; a worker that dies leaves a lock whose process is gone, which the next worker on that machine takes over
(the run resumes from its last checkpoint). A lock of a run on another machine is never taken over: delete it when
that worker is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from vit_pipeline.config.output_dir import OutputDirLock, try_lock


def claim_next(folders: Sequence[Path], finished: Callable[[Path], bool]) -> tuple[int, OutputDirLock] | None:
    """The first of `folders` that is not finished and that no other worker holds, locked for this worker.

    Returns:
        Its index and its lock (release it once its results are written), or None when every unfinished folder is
        held by another worker (or none is left).
    """
    for index, folder in enumerate(folders):
        if finished(folder):
            continue
        lock = try_lock(folder)
        if lock is None:
            continue
        if finished(folder):  # finished by the worker that held it a moment ago
            lock.release()
            continue
        return index, lock
    return None

