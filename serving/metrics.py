"""Prometheus text-format metrics with TF Serving's metric names.

TF Serving exports ``:tensorflow:serving:request_count``, ``:tensorflow:serving:request_latency``
(microseconds) and batching histograms when ``prometheus_config { enable: true }``; the same
names are used here so dashboards and alerts carry over. Loaded versions are exported as
``:tensorflow:serving:model_version_state`` (1 = AVAILABLE).
"""

from __future__ import annotations

import bisect
import threading

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

    def render(self) -> str:
        """The exposition text served at ``/monitoring/prometheus/metrics``."""
        with self._lock:
            out: list[str] = []
            out += _counter(
                ":tensorflow:serving:request_count", "Requests by status.", self._requests
            )
            out += _histogram(
                ":tensorflow:serving:request_latency",
                "Request latency in microseconds.",
                self._latency,
            )
            out += _histogram(
                ":tensorflow:serving:batching_session:processed_batch_size",
                "Rows per executed batch.",
                self._batch,
            )
            out += _counter(
                ":tensorflow:cc:saved_model:load_attempt_count", "SavedModel loads.", self._loads
            )
            name = ":tensorflow:serving:model_version_state"
            out += [f"# HELP {name} Served model versions (1 = AVAILABLE).", f"# TYPE {name} gauge"]
            for (model, version), state in sorted(self._versions.items()):
                labels = _labels(
                    (("model_name", model), ("state", state), ("version", str(version)))
                )
                out.append(f"{name}{{{labels}}} {1 if state == 'AVAILABLE' else 0}")
            return "\n".join(out) + "\n"


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
