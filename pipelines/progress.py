"""Per-component progress of a LocalDagRunner run, read from TFX's own log records.

LocalDagRunner runs components one after another and logs (through absl) when each
starts, whether the launcher reused a cached execution or ran a new one, and when it
finishes; :class:`ProgressTracker` turns those records into progress lines and timings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from medflow.components.models.progress import PROGRESS_PREFIX

_RUNNING = re.compile(r"Component (\S+) is running\.")
_FINISHED = re.compile(r"Component (\S+) is finished\.")
_CACHED = re.compile(r"A cached execution (\d+) is used\.")
_NEW = re.compile(r"Going to run a new execution (\d+)$")
_SKIPPED = re.compile(r"Skipping execution for")


# Loggers whose INFO records go to the log file only (they are chatty on the console).
_QUIET = ("absl", "apache_beam", "tensorflow", "tensorflow_transform", "tfx")


class ProgressTracker(logging.Handler):
    """Collects component status/timings and reports one line per event."""

    def __init__(self, report: Callable[[str], None] | None):
        super().__init__(level=logging.INFO)
        self.report = report
        self.components: dict[str, dict] = {}
        self.current: str | None = None
        self._started = 0.0
        self._cpu = 0.0

    def _say(self, line: str) -> None:
        if self.report:
            self.report(line)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed third-party record must not break the run
            return
        if message.startswith(PROGRESS_PREFIX):  # e.g. the Trainer's epochs
            self._say(f"    {message[len(PROGRESS_PREFIX) :]}")
        elif m := _RUNNING.search(message):
            self.current = m.group(1)
            self._started = time.perf_counter()
            self._cpu = cpu_seconds()
            self.components[self.current] = {"status": "running", "execution_id": None}
            self._say(f"[{len(self.components)}] {self.current} ...")
        elif self.current and (m := _CACHED.search(message)):
            self.components[self.current].update(status="cached", execution_id=int(m.group(1)))
        elif self.current and (m := _NEW.search(message)):
            self.components[self.current].update(status="executed", execution_id=int(m.group(1)))
        elif self.current and _SKIPPED.search(message):
            self.components[self.current]["status"] = "skipped"
        elif (m := _FINISHED.search(message)) and m.group(1) in self.components:
            entry = self.components[m.group(1)]
            entry["seconds"] = round(time.perf_counter() - self._started, 2)
            entry["cpu_seconds"] = round(cpu_seconds() - self._cpu, 2)
            if entry["status"] == "running":  # resolver nodes run no launcher execution
                entry["status"] = "executed"
            self._say(f"    {m.group(1)}: {entry['status']} in {entry['seconds']:.1f} s")
            self.current = None


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children so far."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@contextlib.contextmanager
def console_to_file(log_file: Path) -> Iterator[Callable[[str], None]]:
    """Send everything written to file descriptors 1 and 2 (subprocesses, C++ logging,
    Keras progress, pip) to ``log_file``; yields a ``print`` that still reaches the console.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    console = os.fdopen(os.dup(1), "w", buffering=1)

    def say(line: str) -> None:
        console.write(line + "\n")

    with open(log_file, "ab", buffering=0) as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield say
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()


@contextlib.contextmanager
def capture_tfx_logs(tracker: ProgressTracker, log_file: Path) -> Iterator[None]:
    """Route TFX/Beam/TF INFO logs to ``log_file`` and the tracker, not the console."""
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in _QUIET:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(file_handler)
    absl_logger = logging.getLogger("absl")
    absl_logger.addHandler(tracker)
    # Transform's Beam run lowers absl's verbosity to WARNING (absl.logging.set_verbosity),
    # which would hide the launcher's progress records from here on: pin the level.
    absl_logger.setLevel = lambda level: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del absl_logger.setLevel
        absl_logger.removeHandler(tracker)
        for logger, level, propagate in saved:
            logger.removeHandler(file_handler)
            logger.setLevel(level)
            logger.propagate = propagate
        file_handler.close()
