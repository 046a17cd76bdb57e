"""Ingestion's worker processes (run by the Beam pipeline's per-file step,
:class:`.beam_pipeline.ProcessFiles`, on each bundle): files read, checked, de-identified
and encoded in parallel, results in input order, and a worker that dies (a native decoder fault) costing one file,
never the run.

When a worker process dies, every file of the chunks then in flight is a suspect: each is
run again alone in a fresh process, so the one that kills its process is quarantined as
``worker_crashed`` and the others are processed as usual; then a fresh pool goes on.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from medflow.components.ingest.examples import (
    FileResult,
    WorkerConfig,
    encode_records,
    process_file,
)

Item = tuple[str, str]  # (path, relpath)
# Worker start method. Never "fork": the parent may hold TensorFlow threads (TFX executor)
# and forking those is unsafe. "forkserver" starts one clean single-threaded server that
# imports the worker modules once and forks each worker from it (instead of every spawned
# worker importing pydicom/numpy/PIL itself); "spawn" where there is no forkserver.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
_WORKER_CFG: WorkerConfig | None = None
# Tests only: the relpath of a file whose processing kills its process (SIGKILL, as an OOM
# kill or a decoder's segfault would); unset in normal use.
KILL_ON_ENV = "MEDFLOW_TEST_KILL_WORKER_ON"
_KILL_ON: str | None = None


def _init_worker(cfg: WorkerConfig) -> None:
    global _WORKER_CFG, _KILL_ON
    _WORKER_CFG = cfg
    _KILL_ON = os.environ.get(KILL_ON_ENV)  # read once per worker, not per file


def _work(item: Item) -> FileResult:
    if _KILL_ON is not None and item[1] == _KILL_ON:  # tests only: a decoder that kills its process
        os.kill(os.getpid(), signal.SIGKILL)
    return encode_records(process_file(item[0], item[1], _WORKER_CFG))


def _work_chunk(items: list[Item]) -> list[FileResult]:
    return [_work(item) for item in items]


def _pool_context():
    ctx = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        ctx.set_forkserver_preload([__name__])
    return ctx


def run_workers(
    inputs: list[Item], cfg: WorkerConfig, workers: int, isolate: bool = False
) -> Iterator[FileResult]:
    """Results of every input, in input order (``workers`` <= 1: in this process, unless
    ``isolate``: then in one worker process, so a file that kills it costs only itself)."""
    if workers <= 1 and not isolate:
        _init_worker(cfg)
        yield from map(_work, inputs)
        return
    size = max(1, min(64, len(inputs) // (workers * 8) or 1))
    chunks = iter([inputs[i : i + size] for i in range(0, len(inputs), size)])
    ctx = _pool_context()
    while True:
        suspects = yield from _pool_run(chunks, cfg, workers, ctx)
        if suspects is None:
            return
        for item in suspects:  # one of them took its worker down: find it, alone
            yield _alone(item, cfg, ctx)


def _pool_run(chunks: Iterator[list[Item]], cfg, workers: int, ctx):
    """Yields results until the chunks run out (returns None) or a worker dies (returns the
    files of the chunks in flight, in order)."""
    pending: deque = deque()
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg,))
    try:
        while True:
            while len(pending) < workers * 2 and (chunk := next(chunks, None)) is not None:
                pending.append((chunk, pool.submit(_work_chunk, chunk)))
            if not pending:
                return None
            chunk, future = pending.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:
                return [item for c in (chunk, *(c for c, _ in pending)) for item in c]
            yield from results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _alone(item: Item, cfg: WorkerConfig, ctx) -> FileResult:
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker, initargs=(cfg,)) as pool:
        try:
            return pool.submit(_work, item).result()
        except BrokenProcessPool:
            return FileResult(
                item[1],
                "quarantined",
                "worker_crashed",
                f"{item[1]}: processing it killed its worker process (a fault in a native "
                "pixel decoder); the file is malformed — re-export it from the source",
            )
