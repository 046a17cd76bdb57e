"""Prometheus text-format metrics with TF Serving's metric names.

TF Serving exports ``:tensorflow:serving:request_count``, ``:tensorflow:serving:request_latency``
(microseconds) and batching histograms when ``prometheus_config { enable: true }``; the same
names are used here so dashboards and alerts carry over. Loaded versions are exported as
``:tensorflow:serving:model_version_state`` (1 = AVAILABLE).
"""

from __future__ import annotations

import bisect
import json
import os
import threading
import time
from pathlib import Path

# Microsecond buckets (TF Serving uses exponential buckets for request_latency).
LATENCY_BUCKETS_US = tuple(int(10 * 1.8**i) for i in range(25))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{k}="{esc(v)}"' for k, v in pairs)


class _Histogram:
    def __init__(self, buckets: tuple[int, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


class Metrics:
    """Thread-safe counters and histograms rendered in Prometheus exposition format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple, int] = {}
        self._latency: dict[tuple, _Histogram] = {}
        self._batch: dict[tuple, _Histogram] = {}
        self._loads: dict[tuple, int] = {}
        self._versions: dict[tuple[str, int], str] = {}
        # Set by SharedMetrics: the other worker processes' snapshots, added when rendering.
        self.peers = None

    def observe_request(
        self, *, model: str, api: str, entrypoint: str, status: str, seconds: float
    ) -> None:
        """Count one request and record its latency."""
        with self._lock:
            key = (("entrypoint", entrypoint), ("model_name", model), ("status", status))
            self._requests[key] = self._requests.get(key, 0) + 1
            lkey = (("API", api), ("entrypoint", entrypoint), ("model_name", model))
            hist = self._latency.setdefault(lkey, _Histogram(LATENCY_BUCKETS_US))
            hist.observe(seconds * 1e6)

    def observe_batch(self, model: str, size: int) -> None:
        with self._lock:
            key = (("model_name", model),)
            self._batch.setdefault(key, _Histogram(BATCH_BUCKETS)).observe(size)

    def observe_load(self, model_path: str, ok: bool) -> None:
        with self._lock:
            key = (("model_path", model_path), ("status", "success" if ok else "fail"))
            self._loads[key] = self._loads.get(key, 0) + 1

    def set_version_state(self, model: str, version: int, state: str | None) -> None:
        """Record a version's state; None removes it (unloaded)."""
        with self._lock:
            if state is None:
                self._versions.pop((model, version), None)
            else:
                self._versions[(model, version)] = state

    def snapshot(self) -> dict:
        """Everything recorded so far, as JSON-ready lists (what a worker shares)."""
        with self._lock:
            return {
                "requests": [[list(k), n] for k, n in self._requests.items()],
                "latency": [[list(k), h.counts, h.total, h.n] for k, h in self._latency.items()],
                "batch": [[list(k), h.counts, h.total, h.n] for k, h in self._batch.items()],
                "loads": [[list(k), n] for k, n in self._loads.items()],
                "versions": [[m, v, state] for (m, v), state in self._versions.items()],
            }

    def render(self, others: list[dict] | None = None) -> str:
        """The exposition text served at ``/monitoring/prometheus/metrics``: this process's
        numbers plus ``others`` (snapshots of other worker processes, summed; by default
        those of :class:`SharedMetrics`, if this process shares its metrics)."""
        if others is None:
            others = self.peers() if self.peers else []
        mine = self.snapshot()
        requests = _sum_counts([mine, *others], "requests")
        loads = _sum_counts([mine, *others], "loads")
        latency = _sum_histograms([mine, *others], "latency", LATENCY_BUCKETS_US)
        batch = _sum_histograms([mine, *others], "batch", BATCH_BUCKETS)
        versions: dict[tuple[str, int], str] = {}
        for snap in [*others, mine]:  # a version AVAILABLE anywhere is reported AVAILABLE
            for model, version, state in snap["versions"]:
                if versions.get((model, version)) != "AVAILABLE":
                    versions[(model, version)] = state
        out: list[str] = []
        out += _counter(":tensorflow:serving:request_count", "Requests by status.", requests)
        out += _histogram(
            ":tensorflow:serving:request_latency", "Request latency in microseconds.", latency
        )
        out += _histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Rows per executed batch.",
            batch,
        )
        out += _counter(":tensorflow:cc:saved_model:load_attempt_count", "SavedModel loads.", loads)
        name = ":tensorflow:serving:model_version_state"
        out += [f"# HELP {name} Served model versions (1 = AVAILABLE).", f"# TYPE {name} gauge"]
        for (model, version), state in sorted(versions.items()):
            labels = _labels((("model_name", model), ("state", state), ("version", str(version))))
            out.append(f"{name}{{{labels}}} {1 if state == 'AVAILABLE' else 0}")
        return "\n".join(out) + "\n"


def _key(pairs: list) -> tuple:
    return tuple(tuple(p) for p in pairs)


def _sum_counts(snapshots: list[dict], field: str) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    for snap in snapshots:
        for key, n in snap[field]:
            out[_key(key)] = out.get(_key(key), 0) + n
    return out


def _sum_histograms(snapshots: list[dict], field: str, buckets: tuple) -> dict[tuple, _Histogram]:
    out: dict[tuple, _Histogram] = {}
    for snap in snapshots:
        for key, counts, total, n in snap[field]:
            hist = out.setdefault(_key(key), _Histogram(buckets))
            hist.counts = [a + b for a, b in zip(hist.counts, counts, strict=True)]
            hist.total += total
            hist.n += n
    return out


class SharedMetrics:
    """Metrics of one of several worker processes serving the same ports (``--workers``).

    Each worker writes its snapshot to ``<folder>/worker-<pid>.json`` every ``interval_s``
    (atomically) and, when scraped, adds the other workers' latest files to its own numbers,
    so whichever worker answers the scrape reports the whole server (up to ``interval_s``
    stale for the others). Files of workers that exited stay and keep counting, so counters
    never go down when a worker is replaced; their model versions are dropped once their file
    is older than three intervals. A worker that stops cleanly publishes its final numbers; one
    killed outright (SIGKILL, out of memory) loses what it counted since its last publish.
    """

    def __init__(
        self, metrics: Metrics, folder: str | Path, interval_s: float = 1.0, name: str = ""
    ) -> None:
        self.metrics = metrics
        self.folder = Path(folder)
        self.interval_s = interval_s
        self._own = self.folder / f"worker-{name or os.getpid()}.json"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-share", daemon=True)

    def start(self) -> SharedMetrics:
        self.publish()
        self.metrics.peers = self.peer_snapshots
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.publish()

    def publish(self) -> None:
        tmp = self._own.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.metrics.snapshot()))
        os.replace(tmp, self._own)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.publish()

    def peer_snapshots(self) -> list[dict]:
        """The other workers' latest snapshots."""
        others = []
        now = time.time()
        for path in sorted(self.folder.glob("worker-*.json")):
            if path == self._own:
                continue
            try:
                snap = json.loads(path.read_text())
                age = now - path.stat().st_mtime
            except (OSError, ValueError):  # replaced or half-gone right now: skip this scrape
                continue
            if age > 3 * self.interval_s:
                snap["versions"] = []
            others.append(snap)
        return others


def _counter(name: str, help_text: str, values: dict[tuple, int]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [f"{name}{{{_labels(k)}}} {v}" for k, v in sorted(values.items())]
    return lines


def _histogram(name: str, help_text: str, values: dict[tuple, _Histogram]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for key, hist in sorted(values.items()):
        cumulative = 0
        for bound, count in zip(hist.buckets, hist.counts, strict=False):
            cumulative += count
            lines.append(f"{name}_bucket{{{_labels(key + (('le', str(bound)),))}}} {cumulative}")
        lines.append(f"{name}_bucket{{{_labels(key + (('le', '+Inf'),))}}} {hist.n}")
        lines.append(f"{name}_sum{{{_labels(key)}}} {hist.total:.1f}")
        lines.append(f"{name}_count{{{_labels(key)}}} {hist.n}")
    return lines
