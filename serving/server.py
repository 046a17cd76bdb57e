"""The embedded TF Serving-compatible model server: model manager + gRPC + REST."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medflow.serving.config import (
    BatchingConfig,
    ModelSpecConfig,
    models_in_base,
    read_model_config,
)
from medflow.serving.errors import ServingConfigError
from medflow.serving.grpc_service import start_grpc_server
from medflow.serving.manager import ModelManager
from medflow.serving.metrics import Metrics
from medflow.serving.rest import METRICS_PATH, RestServer
from medflow.serving.servable import LoadOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    """How to run the server.

    Attributes:
        host: interface to bind (127.0.0.1 for local use, 0.0.0.0 in a container).
        grpc_port: gRPC port (TF Serving's 8500); 0 picks a free port.
        rest_port: REST port (TF Serving's 8501); 0 picks a free one, None disables REST.
        max_message_bytes: largest gRPC message accepted (larger: RESOURCE_EXHAUSTED).
        max_body_bytes: largest REST body accepted (larger: HTTP 413).
        poll_seconds: how often the model base is re-scanned; 0 disables watching.
        batching: server-side batching parameters, None to run requests one by one.
        grpc_workers: gRPC handler threads.
        reuse_port: share the gRPC and REST ports with other processes (``--workers``).
        grpc_channel_arguments: more gRPC server arguments, as (name, value) pairs
            (:func:`serving.config.parse_grpc_channel_arguments`).
        metrics_dir: folder where the worker processes of one server share their metrics
            (prometheus_client's multiprocess mode; this process must have been started with
            ``PROMETHEUS_MULTIPROC_DIR`` set to it, :func:`serving.metrics.worker_environment`);
            None: this server's own registry.
        metrics_path: REST path of the Prometheus page; None: no page (TF Serving serves it
            only where its monitoring config enables it).
        grpc_socket_path: also serve gRPC on this UNIX socket (``--grpc_socket_path``).
        rest_timeout_s: a REST request not answered within this is answered 504
            DEADLINE_EXCEEDED (``--rest_api_timeout_in_ms``); None: no limit.
        models_poll_seconds: how often the list of models is read again (the config file,
            or the folders under the model base); 0: never (``--model_config_file_poll_wait_seconds``).
        loading: how versions are loaded (TFLite, warm-up, method-name check).
        profiler: answer TensorFlow's profiler service on the gRPC port (``--enable_profiler``).
    """

    host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int | None = 8501
    max_message_bytes: int = 256 * 2**20
    max_body_bytes: int = 256 * 2**20
    poll_seconds: float = 1.0
    batching: BatchingConfig | None = None
    grpc_workers: int = 16
    reuse_port: bool = False
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()
    metrics_dir: str | None = None
    metrics_path: str | None = METRICS_PATH
    grpc_socket_path: str | None = None
    rest_timeout_s: float | None = None
    models_poll_seconds: float = 0.0
    loading: LoadOptions = field(default_factory=LoadOptions)
    profiler: bool = False


class ModelServer:
    """Serve models over TF Serving's gRPC and REST APIs until :meth:`stop`.

    Example:
        >>> with ModelServer(models_in_base("models"), ServerOptions(grpc_port=0)) as server:
        ...     print(server.grpc_port)
    """

    def __init__(
        self,
        models: list[ModelSpecConfig],
        options: ServerOptions | None = None,
        reload: Callable[[], list[ModelSpecConfig]] | None = None,
    ) -> None:
        self.options = options or ServerOptions()
        self.manager = ModelManager(
            models,
            batching=self.options.batching,
            metrics=Metrics(self.options.metrics_dir),
            poll_seconds=self.options.poll_seconds,
            loading=self.options.loading,
        )
        self._reload = reload
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc = None
        self._rest = None
        self._stopped = threading.Event()

    def start(self) -> ModelServer:
        """Load the models found now, then open the ports (TF Serving's order)."""
        opts = self.options
        self.manager.start()
        try:
            self._grpc, self.grpc_port = start_grpc_server(
                self.manager,
                opts.host,
                opts.grpc_port,
                max_message_bytes=opts.max_message_bytes,
                workers=opts.grpc_workers,
                reuse_port=opts.reuse_port,
                channel_arguments=opts.grpc_channel_arguments,
                socket_path=opts.grpc_socket_path,
                profiler=opts.profiler,
            )
            if opts.rest_port is not None:
                self._rest = RestServer(
                    self.manager,
                    opts.host,
                    opts.rest_port,
                    max_body_bytes=opts.max_body_bytes,
                    reuse_port=opts.reuse_port,
                    metrics_path=opts.metrics_path,
                    timeout_s=opts.rest_timeout_s,
                )
                self._rest.start()
                self.rest_port = self._rest.port
        except BaseException:
            self.stop()
            raise
        if self._reload is not None and opts.models_poll_seconds > 0:
            threading.Thread(target=self._watch_models, name="config-watcher", daemon=True).start()
        log.info(
            "serving %s: gRPC %s:%s, REST %s",
            self.manager.model_names,
            opts.host,
            self.grpc_port,
            self.rest_port,
        )
        return self

    def stop(self) -> None:
        """Stop accepting requests, finish in-flight ones, unload models."""
        if self._rest is not None:
            self._rest.stop()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace=5).wait()
            self._grpc = None
        self.manager.stop()
        self._stopped.set()

    def _watch_models(self) -> None:
        """Read the model list again every ``models_poll_seconds`` and serve what it says; a
        list that cannot be read is logged and the models served stay (as TF Serving)."""
        while not self._stopped.wait(self.options.models_poll_seconds):
            try:
                models = self._reload()
            except Exception as exc:
                log.error("model list not reloaded: %s", exc)
                continue
            if {m.name: m for m in models} != self.manager.model_specs:
                self.manager.reconfigure(models)

    def wait(self) -> None:
        """Block until :meth:`stop` (or Ctrl-C in the caller)."""
        while not self._stopped.wait(0.5):
            pass

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def resolve_models(
    model_base: str | Path | None, model_config: str | Path | None
) -> list[ModelSpecConfig]:
    """Models from ``--model-config`` (TF Serving's file) or every folder under ``--model-base``."""
    if model_config:
        return read_model_config(model_config)
    if model_base:
        models = models_in_base(model_base)
        if not models:
            raise ServingConfigError(
                f"model base {model_base} has no model folders; expected <base>/<name>/<version>/saved_model.pb"
            )
        return models
    raise ServingConfigError("nothing to serve: pass --model-base DIR or --model-config FILE")


def run_until_stopped(server: ModelServer) -> int:
    """Start ``server``, say where it listens, serve until SIGTERM or Ctrl-C, then stop after
    the requests in flight (docker stop, Kubernetes, the ``--workers`` supervisor)."""
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server.start()
    opts = server.options
    rest = f", REST on {opts.host}:{server.rest_port}" if server.rest_port else ""
    names = ", ".join(server.manager.model_names)
    print(f"serving {names}: gRPC on {opts.host}:{server.grpc_port}{rest}", flush=True)
    try:
        server.wait()
    finally:
        server.stop()
    return 0


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)  # unwinds through server.wait() into server.stop()
