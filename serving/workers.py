"""``medflow serve --workers N``: N server processes answering on the same ports.

One Python process runs one request's Python work at a time (the GIL): for small models,
where a request is mostly gRPC and protobuf work rather than TensorFlow, one process tops out
long before the machine does (BENCHMARKS.md, Serving). TF Serving is one C++ process; the
Python equivalent is several processes: each loads the models, binds the gRPC and REST ports
with ``SO_REUSEPORT``, and the kernel spreads incoming connections over them. Their metrics
are summed through a private folder (prometheus_client's multiprocess mode, set up by
:mod:`serving.metrics`), so a scrape of any worker reports the whole server.

This supervisor starts the workers, reports ready once every one of them serves, replaces a
worker that dies, and stops them all on SIGTERM / Ctrl-C. Workers die with it (Linux
``PR_SET_PDEATHSIG``) even if it is killed outright.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass

from medflow.serving import metrics
from medflow.serving.errors import ServingConfigError

log = logging.getLogger(__name__)

# A worker that keeps dying is not worth restarting forever: more than this many restarts
# within RESTART_WINDOW_S stops the server with an error.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen
    ready: threading.Event
    first_line: list


class WorkerPool:
    """Start, watch and stop ``n`` worker processes running ``command`` (a ``medflow serve``
    command line for one worker, which prints one ``serving ...`` line when it serves).

    Args:
        command: argv of one worker.
        n: number of workers.
        ready_timeout_s: how long a worker may take to load its models and start serving.
        metrics_dir: the folder where the workers share their metrics: given to each worker
            as ``PROMETHEUS_MULTIPROC_DIR`` (its environment only), and told when one exits.
    """

    def __init__(
        self,
        command: list[str],
        n: int,
        *,
        ready_timeout_s: float = 600.0,
        metrics_dir: str | None = None,
    ) -> None:
        if n < 1:
            raise ServingConfigError(f"--workers must be 1 or more, got {n}")
        self.command = command
        self.n = n
        self.metrics_dir = metrics_dir
        self.ready_timeout_s = ready_timeout_s
        self.workers: list[_Worker] = []
        self._restarts: deque[float] = deque()
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    def _spawn(self, index: int) -> _Worker:
        proc = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            env=metrics.worker_environment(self.metrics_dir) if self.metrics_dir else None,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        worker = _Worker(index, proc, threading.Event(), [])

        def relay() -> None:  # first line = ready; the rest goes to our stdout
            for i, raw in enumerate(iter(proc.stdout.readline, b"")):
                line = raw.decode(errors="replace")
                if i == 0:
                    worker.first_line.append(line)
                    worker.ready.set()
                else:
                    sys.stdout.write(line)
            worker.ready.set()  # exited: wake whoever waits

        threading.Thread(target=relay, name=f"worker-{index}-stdout", daemon=True).start()
        return worker

    def _wait_ready(self, worker: _Worker) -> None:
        if not worker.ready.wait(self.ready_timeout_s):
            raise ServingConfigError(
                f"worker {worker.index + 1} of {self.n} did not start serving within "
                f"{self.ready_timeout_s:.0f} s"
            )
        line = worker.first_line[0] if worker.first_line else ""
        if not line.startswith("serving"):
            code = worker.proc.wait(timeout=30)
            raise ServingConfigError(
                f"worker {worker.index + 1} of {self.n} exited with code {code} before serving "
                "(its error is above)"
            )

    def start(self) -> WorkerPool:
        """Start every worker and wait until all serve; on failure stop them all and raise."""
        try:
            self.workers = [self._spawn(i) for i in range(self.n)]
            for worker in self.workers:
                self._wait_ready(worker)
        except BaseException:
            self.stop()
            raise
        return self

    def watch(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Replace workers that exit until ``stop`` is set; raises when they keep dying."""
        while not stop.wait(poll_s):
            for i, worker in enumerate(self.workers):
                code = worker.proc.poll()
                if code is None or self._stopping:
                    continue
                now = time.monotonic()
                self._restarts.append(now)
                while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
                    self._restarts.popleft()
                if len(self._restarts) > MAX_RESTARTS:
                    raise ServingConfigError(
                        f"workers exited {len(self._restarts)} times within "
                        f"{RESTART_WINDOW_S:.0f} s (last: worker {i + 1}, code {code}); "
                        "stopping — see the errors above"
                    )
                log.warning(
                    "worker %d (pid %d) exited with code %s; starting a new one",
                    i + 1,
                    worker.proc.pid,
                    code,
                )
                self._forget(worker)
                self.workers[i] = self._spawn(i)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every worker (they finish in-flight requests), SIGKILL what remains."""
        self._stopping = True
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        deadline = time.monotonic() + grace_s
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        """An exited worker's model versions leave the metrics; its counts stay summed."""
        if self.metrics_dir:
            metrics.forget_worker(self.metrics_dir, worker.proc.pid)


def serve_with_workers(worker_command, n: int, announce) -> int:
    """Run ``n`` workers until SIGTERM / Ctrl-C. ``worker_command(metrics_dir)`` gives one
    worker's argv; ``announce(pids)`` prints the ready line. The workers share their metrics in
    a private folder, removed when they have stopped."""
    metrics_dir = tempfile.mkdtemp(prefix="medflow-serve-metrics-")
    pool = WorkerPool(worker_command(metrics_dir), n, metrics_dir=metrics_dir)
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        pool.start()
        announce(pool.pids)
        try:
            pool.watch(stop)
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
