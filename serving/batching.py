"""Server-side batching: concurrent requests to one signature run as one batched call.

Semantics follow TF Serving's BasicBatchScheduler: a batch closes when it holds
``max_batch_size`` rows or its oldest task has waited ``batch_timeout_micros``;
``num_batch_threads`` batches run at once; more than ``max_enqueued_batches`` waiting batches
is UNAVAILABLE; a task larger than ``max_batch_size`` is INVALID_ARGUMENT unless
``enable_large_batch_splitting``; batches are padded up to the next ``allowed_batch_sizes``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import numpy as np

from medflow.serving.config import BatchingConfig
from medflow.serving.errors import invalid, unavailable

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class _Task:
    __slots__ = ("inputs", "size", "enqueued", "done", "result", "error")

    def __init__(self, inputs: dict[str, np.ndarray], size: int) -> None:
        self.inputs = inputs
        self.size = size
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None


class BatchScheduler:
    """Queues tasks (dicts of arrays sharing a leading batch dimension) and runs them batched.

    Args:
        run: the unbatched function (one call per formed batch).
        config: TF Serving batching parameters.
        name: used for thread names.
        on_batch: called with each executed batch size (metrics).
    """

    def __init__(
        self,
        run: RunFn,
        config: BatchingConfig,
        name: str = "batch",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._cfg = config
        self._on_batch = on_batch
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"{name}-{i}", daemon=True)
            for i in range(config.num_batch_threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``inputs`` as part of a batch and return this task's rows of the outputs."""
        size = _batch_size(inputs)
        limit = self._cfg.max_batch_size
        if size > limit:
            if not self._cfg.enable_large_batch_splitting:
                raise invalid(f"Task size {size} is larger than maximum input batch size {limit}")
            parts = [
                self.submit({k: v[i : i + limit] for k, v in inputs.items()})
                for i in range(0, size, limit)
            ]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        task = _Task(inputs, size)
        with self._cond:
            closed = self._closed
            if not closed:
                capacity = self._cfg.max_enqueued_batches * limit
                if self._queued_rows + size > capacity:
                    raise unavailable(
                        "The batch scheduling queue to which this task was submitted is full"
                    )
                self._queue.append(task)
                self._queued_rows += size
                self._cond.notify()
        if closed:
            # The version was unloaded between resolving it and submitting: the request
            # still holds the model, so it is answered unbatched rather than failed.
            return self._run(inputs)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        """Finish queued tasks, then stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=30)

    def _take_batch(self) -> list[_Task] | None:
        timeout = self._cfg.batch_timeout_micros / 1e6
        limit = self._cfg.max_batch_size
        with self._cond:
            while True:
                if not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                waited = time.monotonic() - self._queue[0].enqueued
                if self._queued_rows >= limit or waited >= timeout or self._closed:
                    break
                self._cond.wait(timeout - waited)
            batch, rows = [], 0
            while self._queue and rows + self._queue[0].size <= limit:
                task = self._queue.popleft()
                rows += task.size
                batch.append(task)
            self._queued_rows -= rows
            if self._queue:
                self._cond.notify()  # another thread can start on the rest
            return batch

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._execute(batch)

    def _execute(self, batch: list[_Task]) -> None:
        try:
            inputs = {
                k: np.concatenate([t.inputs[k] for t in batch])
                if len(batch) > 1
                else batch[0].inputs[k]
                for k in batch[0].inputs
            }
            rows = sum(t.size for t in batch)
            padded = _pad(inputs, rows, self._cfg.allowed_batch_sizes)
            outputs = self._run(padded)
            if self._on_batch:
                self._on_batch(rows)
            start = 0
            for task in batch:
                task.result = {k: v[start : start + task.size] for k, v in outputs.items()}
                start += task.size
        except BaseException as exc:  # every waiting request must get an answer
            for task in batch:
                task.error = exc
        finally:
            for task in batch:
                task.done.set()


def _batch_size(inputs: dict[str, np.ndarray]) -> int:
    sizes = {v.shape[0] if v.ndim else -1 for v in inputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise invalid(f"batched inputs must share the first dimension, got sizes {sorted(sizes)}")
    return sizes.pop()


def _pad(
    inputs: dict[str, np.ndarray], rows: int, allowed: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Pad to the next allowed batch size by repeating the first row (as TF Serving does)."""
    target = next((s for s in allowed if s >= rows), rows)
    if target == rows:
        return inputs
    return {
        k: np.concatenate([v, np.repeat(v[:1], target - rows, axis=0)]) for k, v in inputs.items()
    }
