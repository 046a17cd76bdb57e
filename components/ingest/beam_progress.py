"""Progress of an ingestion pipeline while it runs, on any local runner.

DirectRunner (in-memory and multi-processing) runs the whole pipeline inside
``Pipeline.run()``: its ``PipelineResult`` and metrics only exist once it is done, so they
cannot be polled for progress. Instead each processed input appends one byte to a progress
file in the staging folder (``O_APPEND``: writes from every Beam worker process add up; one
small write per file, no patient data), and a thread of the launching process turns the
file's growth into steps of the caller's progress wrapper (e.g. ``tqdm``). A bundle the
runner retries counts twice: the count is capped at the number of inputs. Where the staging
folder is not reachable from a worker (a remote runner) the worker counts nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

Progress = Callable[[Iterator, int], Iterator]  # (ticks, total) → ticks, e.g. tqdm
PROGRESS_NAME = ".progress"


class Ticker:
    """Appends one byte per processed input to the progress file (picklable; opened
    lazily in the worker)."""

    def __init__(self, path: str | None):
        self._path = path
        self._fd: int | None = None

    def __getstate__(self) -> dict:
        return {"_path": self._path, "_fd": None}

    def tick(self) -> None:
        if self._path is None:
            return
        if self._fd is None:
            try:
                self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError:
                self._path = None  # not reachable from this worker: count nothing
                return
        os.write(self._fd, b".")


@contextlib.contextmanager
def watching(progress: Progress | None, total: int, path: str, poll_s: float = 0.2):
    """While the block runs (and once more at its end), feeds ``progress`` one step per
    byte appended to ``path``, at most ``total``."""
    if progress is None:
        yield
        return
    stop = threading.Event()

    def ticks() -> Iterator[None]:
        done = 0
        while True:
            stopped = stop.wait(poll_s)
            seen = min(total, _size(path))
            for _ in range(seen - done):
                yield None
            done = max(done, seen)
            if stopped:
                return

    thread = threading.Thread(
        target=lambda: all(True for _ in progress(ticks(), total)), daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
