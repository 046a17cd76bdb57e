"""Prometheus metrics with TF Serving's metric names, kept and exposed by ``prometheus_client``.

TF Serving exports ``:tensorflow:serving:request_count``, ``:tensorflow:serving:request_latency``
(microseconds) and batching histograms when ``prometheus_config { enable: true }``; the same
names are used here so dashboards and alerts carry over. Loaded versions are exported as
``:tensorflow:serving:model_version_state`` (1 = AVAILABLE).

One server process keeps its metrics in a registry of its own (:class:`Metrics`; many servers
can run in one process, as in the tests). The worker processes of ``medflow serve --workers``
use prometheus_client's multiprocess mode: the supervisor creates a private folder and starts
each worker with ``PROMETHEUS_MULTIPROC_DIR`` pointing at it (:func:`worker_environment`; the
variable is set in the workers' environment only), every worker writes its numbers to
memory-mapped files there as it counts, and a scrape of any worker merges all the files
(``MultiProcessCollector``). Counts of a worker that exited stay in the sum, so counters never
go down when a worker is replaced, and nothing counted is lost when one is killed outright; its
model versions stop being reported once the supervisor marks it dead (:func:`forget_worker`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from medflow.serving.errors import ServingConfigError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text/plain; version=0.0.4 (what TF Serving serves)

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
LOAD_ATTEMPTS = ":tensorflow:cc:saved_model:load_attempt_count"
VERSION_STATE = ":tensorflow:serving:model_version_state"
# prometheus_client writes counters as <name>_total; TF Serving (and our dashboards) use <name>.
_COUNTERS = (REQUEST_COUNT, LOAD_ATTEMPTS)
_TOTAL_SUFFIX = re.compile(
    rf"^(# (?:HELP|TYPE) )?({'|'.join(map(re.escape, _COUNTERS))})_total(?=[ {{])", re.M
)

# Microsecond buckets (TF Serving uses exponential buckets for request_latency).
LATENCY_BUCKETS_US = tuple(int(10 * 1.8**i) for i in range(25))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# A version's state is kept as one number per (model, version), 0 = not loaded, so that the
# workers' values merge with "max": a version AVAILABLE in any worker is reported AVAILABLE.
_STATE_CODES = {"START": 1, "UNLOADING": 2, "LOADING": 3, "AVAILABLE": 4}
_STATE_NAMES = {code: state for state, code in _STATE_CODES.items()}


class Metrics:
    """Counters, histograms and gauges of one server (thread-safe).

    Args:
        multiprocess_dir: the folder the worker processes of one server share (``medflow serve
            --workers``); this process must have been started with ``PROMETHEUS_MULTIPROC_DIR``
            set to it (:func:`worker_environment`). None: a registry of this object's own.
    """

    def __init__(self, multiprocess_dir: str | os.PathLike | None = None) -> None:
        self.multiprocess_dir = str(multiprocess_dir) if multiprocess_dir else None
        if self.multiprocess_dir:
            _check_multiprocess_mode(self.multiprocess_dir)
            registry = None  # exposed through MultiProcessCollector, which reads every worker
        else:
            registry = CollectorRegistry()
        self._registry = registry
        self._requests = Counter(
            REQUEST_COUNT,
            "Requests by status.",
            ("entrypoint", "model_name", "status"),
            registry=registry,
        )
        self._latency = Histogram(
            REQUEST_LATENCY,
            "Request latency in microseconds.",
            ("API", "entrypoint", "model_name"),
            buckets=LATENCY_BUCKETS_US,
            registry=registry,
        )
        self._batch = Histogram(
            BATCH_SIZE,
            "Rows per executed batch.",
            ("model_name",),
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self._loads = Counter(
            LOAD_ATTEMPTS, "SavedModel loads.", ("model_path", "status"), registry=registry
        )
        self._versions = Gauge(
            VERSION_STATE,
            "Served model versions (1 = AVAILABLE).",
            ("model_name", "version"),
            registry=registry,
            multiprocess_mode="livemax",  # workers alive now; the highest state wins
        )
        self._children: dict[tuple, tuple] = {}  # labels() once per label set (hot path)

    def observe_request(
        self, *, model: str, api: str, entrypoint: str, status: str, seconds: float
    ) -> None:
        """Count one request and record its latency."""
        key = (model, api, entrypoint, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._requests.labels(entrypoint, model, status),
                self._latency.labels(api, entrypoint, model),
            )
        children[0].inc()
        children[1].observe(seconds * 1e6)

    def observe_batch(self, model: str, size: int) -> None:
        self._batch.labels(model).observe(size)

    def observe_load(self, model_path: str, ok: bool) -> None:
        self._loads.labels(model_path, "success" if ok else "fail").inc()

    def set_version_state(self, model: str, version: int, state: str | None) -> None:
        """Record a version's state (manager.VersionStatus's); None removes it (unloaded)."""
        self._versions.labels(model, str(version)).set(_STATE_CODES.get(state, 0))

    def render(self) -> str:
        """The exposition text served at ``/monitoring/prometheus/metrics``: this server's
        numbers; with ``multiprocess_dir``, those of all its worker processes."""
        if self.multiprocess_dir:
            return render_folder(self.multiprocess_dir)
        return exposition(self._registry)


def exposition(source) -> str:
    """Prometheus text format of ``source`` (a registry or collector), in TF Serving's shape:
    counters without the ``_total`` suffix, no ``_created`` series, version states as
    ``{model_name, state, version}`` series."""
    text = generate_latest(_TfServingView(source)).decode()
    return _TOTAL_SUFFIX.sub(r"\1\2", text)


def render_folder(folder: str | os.PathLike) -> str:
    """The exposition of every worker process that wrote to ``folder`` (merged)."""
    return exposition(MultiProcessCollector(None, path=str(folder)))


def worker_environment(folder: str | os.PathLike, base: dict | None = None) -> dict[str, str]:
    """The environment to start a worker process with (``base``: this process's)."""
    return {**(os.environ if base is None else base), MULTIPROC_ENV: str(folder)}


def forget_worker(folder: str | os.PathLike, pid: int) -> None:
    """A worker exited: stop reporting its gauges (its counts stay in the sums)."""
    mark_process_dead(pid, str(folder))


def _check_multiprocess_mode(folder: str) -> None:
    # prometheus_client picks mmap-backed values when it is imported, from the environment.
    configured = os.environ.get(MULTIPROC_ENV)
    same = configured is not None and os.path.realpath(configured) == os.path.realpath(folder)
    if not same or not getattr(_values.ValueClass, "_multiprocess", False):
        raise ServingConfigError(
            f"shared metrics in {folder} need {MULTIPROC_ENV}={folder} in the environment this "
            "process starts with (medflow serve --workers sets it for its workers)"
        )
    if not os.path.isdir(folder):
        raise ServingConfigError(f"metrics folder {folder} does not exist")


class _TfServingView:
    """A collector over ``source`` that reshapes its families for :func:`exposition`."""

    def __init__(self, source) -> None:
        self._source = source

    def collect(self) -> Iterable:
        for family in self._source.collect():  # fresh objects on every collect: ours to edit
            samples = [s for s in family.samples if not s.name.endswith("_created")]
            if family.name == VERSION_STATE:
                samples = [_state_sample(s) for s in samples if int(s.value) in _STATE_NAMES]
                samples.sort(key=lambda s: (s.labels["model_name"], int(s.labels["version"])))
            family.samples = samples
            yield family


def _state_sample(sample):
    state = _STATE_NAMES[int(sample.value)]
    labels = {**sample.labels, "state": state}
    labels.pop("pid", None)
    return sample._replace(labels=labels, value=1.0 if state == "AVAILABLE" else 0.0)
