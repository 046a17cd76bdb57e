"""Model manager: finds complete versions on disk, loads/unloads them per policy, resolves requests.

Traffic moves without failed requests because the served map is replaced atomically: a new
version is fully loaded before it is published, and an old one is withdrawn from the map before
it is closed; requests already holding it finish on it.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from medflow.serving.config import BatchingConfig, ModelSpecConfig
from medflow.serving.errors import invalid, not_found
from medflow.serving.metrics import Metrics
from medflow.serving.profiler import traceme
from medflow.serving.servable import LoadedVersion, LoadOptions, load_version

log = logging.getLogger(__name__)


def settle_heap() -> None:
    """Take the objects of the loaded models out of the cyclic garbage collector's scans.

    A loaded TensorFlow model holds hundreds of thousands of Python objects, and every full
    (generation 2) collection walks them all: ~0.5 s on 2 cores with the GIL held, so every
    request in flight waits. A request that builds many containers (a JSON image body) set
    one off every few requests. ``gc.freeze()`` moves the objects alive now to the permanent
    generation; it is redone after every load and unload, after ``gc.unfreeze()`` and a full
    collection, so an unloaded version's reference cycles are still reclaimed.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class VersionStatus:
    """A version's state as GetModelStatus reports it (ModelVersionStatus.State names)."""

    version: int
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error: str = ""


def _fingerprint(version_dir: Path, tflite: bool = False) -> tuple | None:
    """Files with sizes and mtimes, or None while the version is incomplete."""
    model_file = "model.tflite" if tflite else "saved_model.pb"
    if not (version_dir / model_file).is_file():
        return None
    variables = version_dir / "variables"
    if variables.is_dir() and not (variables / "variables.index").is_file():
        return None
    try:
        return tuple(
            sorted(
                (str(p.relative_to(version_dir)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in version_dir.rglob("*")
                if p.is_file()
            )
        )
    except FileNotFoundError:  # files moving under us: not complete yet
        return None


def scan_versions(base_path: Path, prefer_tflite: bool = False) -> dict[int, tuple[str, tuple]]:
    """Complete version directories under a model's base path: {version: (folder name,
    fingerprint)}. Any non-negative integer name is a version, kept as written (TF Serving
    reads ``00000123`` as version 123 and loads it from ``00000123``). ``prefer_tflite``: a
    folder with ``model.tflite`` is complete without ``saved_model.pb``."""
    found: dict[int, tuple[str, tuple]] = {}
    if not base_path.is_dir():
        return found
    for child in sorted(base_path.iterdir()):
        if child.is_dir() and child.name.isascii() and child.name.isdigit():
            fp = (prefer_tflite and _fingerprint(child, tflite=True)) or _fingerprint(child)
            if fp is not None and int(child.name) not in found:
                found[int(child.name)] = (child.name, fp)
    return found


# The metrics label of requests for a model this server does not serve.
NOT_SERVED = "(not served)"


class ModelManager:
    """Serves the models of a ModelServerConfig from disk and follows changes by polling.

    Args:
        models: the models to serve.
        batching: batching parameters for every model, or None (no server-side batching).
        metrics: metrics registry.
        poll_seconds: how often to look for new/removed versions (TF Serving's
            ``--file_system_poll_wait_seconds``); 0 disables watching.
    """

    def __init__(
        self,
        models: list[ModelSpecConfig],
        *,
        batching: BatchingConfig | None = None,
        metrics: Metrics | None = None,
        poll_seconds: float = 1.0,
        loading: LoadOptions | None = None,
    ) -> None:
        self._models = {m.name: m for m in models}
        self._batching = batching
        self.metrics = metrics or Metrics()
        self._poll_seconds = poll_seconds
        self.loading = loading or LoadOptions()
        self.check_method_name = self.loading.check_method_name
        self._sync_lock = threading.RLock()  # one poll or reconfiguration at a time
        self._served: dict[str, dict[int, LoadedVersion]] = {m: {} for m in self._models}
        self._states: dict[str, dict[int, VersionStatus]] = {m: {} for m in self._models}
        self._seen: dict[tuple[str, int], tuple] = {}  # fingerprint at the previous poll
        self._failed: dict[tuple[str, int], tuple] = {}  # fingerprint that failed to load
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def model_names(self) -> list[str]:
        return sorted(self._models)

    @property
    def model_specs(self) -> dict[str, ModelSpecConfig]:
        return dict(self._models)

    def observe_request(self, *, model: str, **fields) -> None:
        """Count a request in the metrics under its model's name, or under
        :data:`NOT_SERVED` for a name this server does not serve: labels come from the
        server's configuration, never from client input (random names would grow the
        metrics page without bound)."""
        self.metrics.observe_request(model=model if model in self._models else NOT_SERVED, **fields)

    def start(self) -> None:
        """Load what is on disk now (like TF Serving, before ports open), then keep watching."""
        self.poll_once(initial=True)
        if self._poll_seconds > 0:
            self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)
        for name in self._models:
            self._publish(name, {})
            for loaded in self._served_snapshot(name).values():
                loaded.close()
        gc.unfreeze()  # an embedding process goes back to ordinary collection

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                with traceme("ModelManager::poll"):
                    self.poll_once()
            except Exception:  # the watcher must survive a bad model directory
                log.exception("model directory poll failed")

    def poll_once(self, initial: bool = False) -> None:
        """Load new complete versions and unload those the policy drops, for every model."""
        with self._sync_lock:
            changed = False
            for spec in list(self._models.values()):
                if self._stop.is_set():
                    return
                changed |= self._sync_model(spec, initial)
            if changed:
                settle_heap()

    def reconfigure(self, models: list[ModelSpecConfig]) -> None:
        """Serve ``models`` from now on (TF Serving's config reload): models no longer listed
        are unloaded, new ones loaded before this returns, changed policies applied."""
        with self._sync_lock:
            new = {m.name: m for m in models}
            # A model left out, or now read from another folder, gives up what it serves.
            moved = {
                n
                for n in new
                if n in self._models and new[n].base_path != self._models[n].base_path
            }
            for name in sorted((set(self._models) - set(new)) | moved):
                for version in sorted(self._served_snapshot(name)):
                    self._unload(name, version)
            with self._lock:
                for name in new:
                    self._served.setdefault(name, {})
                    self._states.setdefault(name, {})
                for name in set(self._models) - set(new):
                    del self._served[name], self._states[name]
                self._models = new
            self.poll_once(initial=True)
        log.info("serving models %s", self.model_names)

    def _stable_versions(self, spec: ModelSpecConfig, initial: bool) -> tuple[dict, set[int]]:
        """(versions whose files did not change since the previous poll, all complete ones)."""
        found = scan_versions(spec.base_path, self.loading.prefer_tflite)
        stable = {}
        for version, fp in found.items():
            key = (spec.name, version)
            if (initial or self._seen.get(key) == fp) and self._failed.get(key) != fp:
                stable[version] = fp
            self._seen[key] = fp
        return stable, set(found)

    def _sync_model(self, spec: ModelSpecConfig, initial: bool) -> bool:
        """Load and unload versions of one model per its policy; True when any changed."""
        stable, complete = self._stable_versions(spec, initial)
        served = self._served_snapshot(spec.name)
        # A served version whose folder went away no longer counts, so the policy picks its
        # replacement, which is loaded before it is unloaded (availability first).
        usable = set(stable) | (set(served) & complete)
        changed = False
        while True:
            wanted = set(spec.policy.select(sorted(usable)))
            missing = sorted(wanted - set(served), reverse=True)
            if not missing:
                break
            loaded = self._load(spec, missing[0], stable[missing[0]])
            if loaded is None:
                usable.discard(missing[0])  # keep serving what we have; re-evaluate without it
                continue
            served = {**served, missing[0]: loaded}
            self._publish(spec.name, served)
            changed = True
        for version in sorted(set(served) - wanted):
            self._unload(spec.name, version)
            changed = True
        return changed

    def _load(self, spec: ModelSpecConfig, version: int, found: tuple) -> LoadedVersion | None:
        path = spec.base_path / found[0]
        self._set_state(spec.name, VersionStatus(version, "LOADING"))
        started = time.monotonic()
        try:
            loaded = load_version(
                spec.name,
                version,
                path,
                self.loading,
                batching=self._batching,
                on_batch=lambda n: self.metrics.observe_batch(spec.name, n),
            )
        except Exception as exc:  # a broken version must not take the server down
            self._failed[(spec.name, version)] = found
            self.metrics.observe_load(str(path), ok=False)
            self._set_state(spec.name, VersionStatus(version, "END", f"load failed: {exc}"))
            log.error("could not load %s version %d from %s: %s", spec.name, version, path, exc)
            return None
        self.metrics.observe_load(str(path), ok=True)
        self._set_state(spec.name, VersionStatus(version, "AVAILABLE"))
        log.info("loaded %s version %d in %.2fs", spec.name, version, time.monotonic() - started)
        return loaded

    def _unload(self, name: str, version: int) -> None:
        served = dict(self._served_snapshot(name))
        loaded = served.pop(version, None)
        self._publish(name, served)
        if loaded is None:
            return
        self._set_state(name, VersionStatus(version, "UNLOADING"))
        loaded.close()
        self._set_state(name, VersionStatus(version, "END"))
        log.info("unloaded %s version %d", name, version)

    def _publish(self, name: str, served: dict[int, LoadedVersion]) -> None:
        with self._lock:
            self._served[name] = served

    def _served_snapshot(self, name: str) -> dict[int, LoadedVersion]:
        with self._lock:
            return self._served[name]

    def _set_state(self, name: str, status: VersionStatus) -> None:
        with self._lock:
            self._states[name][status.version] = status
        self.metrics.set_version_state(
            name, status.version, None if status.state == "END" else status.state
        )

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedVersion:
        """The loaded version a request addresses (TF Serving's ServableRequest rules)."""
        if name not in self._models:
            raise not_found(
                f"Servable not found for request: Latest({name}); this server serves "
                f"{', '.join(self.model_names) or 'no models'}"
            )
        if label:
            labels = self._models[name].labels
            if label not in labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = labels[label]
        served = self._served_snapshot(name)
        if version is None:
            if not served:
                raise not_found(f"Servable not found for request: Latest({name})")
            return served[max(served)]
        if version not in served:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return served[version]

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Version states for GetModelStatus; NOT_FOUND as TF Serving words it."""
        with self._lock:
            states = dict(self._states.get(name, {}))
        if name not in self._models or not states:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            return [states[version]]
        return [states[v] for v in sorted(states, reverse=True)]

    def labels_of(self, name: str) -> dict[str, int]:
        return dict(self._models[name].labels) if name in self._models else {}
