"""Helpers shared by the serving tests (this module holds no tests).

Demo SavedModels are exported once per test run into a template folder; tests copy the
versions they need into their own model base, the way a Pusher lands versions.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medflow.serving.config import BatchingConfig, ModelSpecConfig, models_in_base
from medflow.serving.server import ModelServer, ServerOptions
from tests.support.waiting import wait_until as _wait_until

SIZE = (28, 28)
VERSIONS = (1, 2, 3, 4)


@functools.lru_cache(maxsize=1)
def template() -> Path:
    """A model folder with demo versions 1-4 (seeds differ, so their numbers differ)."""
    from tests.support.demo_model import export_demo_model

    root = Path(tempfile.mkdtemp(prefix="medflow-serving-template-"))
    atexit.register(shutil.rmtree, root, True)
    for version in VERSIONS:
        export_demo_model(root, "demo", version, size=SIZE, seed=version)
    return root / "demo"


def add_version(base: Path, version: int, name: str = "demo") -> Path:
    """Land a template version in ``base/name/`` atomically (copy aside, then rename)."""
    model_dir = base / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f".staging-{version}"
    shutil.copytree(template() / str(version), staging)
    final = model_dir / str(version)
    os.replace(staging, final)
    return final


@functools.cache
def _loaded(version: int):
    import tensorflow as tf

    return tf.saved_model.load(str(template() / str(version)))


def in_process(version: int, signature: str = "serving_default", **inputs) -> dict:
    """Call a template version's signature in this process (the reference numbers)."""
    import tensorflow as tf

    fn = _loaded(version).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def images(n: int, seed: int = 0) -> np.ndarray:
    rows, cols = SIZE
    return np.random.default_rng(seed).normal(100, 30, (n, rows, cols, 1)).astype(np.float32)


def image_examples(batch: np.ndarray) -> list:
    """tf.Examples with the raw float32 ``image`` feature the demo model parses."""
    from tensorflow.core.example import example_pb2

    out = []
    for image in batch:
        ex = example_pb2.Example()
        ex.features.feature["image"].bytes_list.value.append(image.astype("<f4").tobytes())
        out.append(ex)
    return out


def start_server(
    models: list[ModelSpecConfig] | Path,
    *,
    batching: BatchingConfig | None = None,
    poll_seconds: float = 0.0,
    grpc_port: int = 0,
    max_message_bytes: int = 4 * 2**20,
) -> ModelServer:
    """The embedded server on loopback, ephemeral ports unless ``grpc_port`` is given."""
    if isinstance(models, Path):
        models = models_in_base(models)
    options = ServerOptions(
        host="127.0.0.1",
        grpc_port=grpc_port,
        rest_port=0,
        max_message_bytes=max_message_bytes,
        max_body_bytes=max_message_bytes,
        poll_seconds=poll_seconds,
        batching=batching,
        grpc_workers=16,
    )
    return ModelServer(models, options).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """tests.support.waiting.wait_until with the serving tests' ``what=`` spelling."""
    _wait_until(predicate, timeout=timeout, message=what)


def count_polls(server: ModelServer) -> Callable[[], int]:
    """Counts the model directory polls the server completes from now on (its watcher thread
    calls ``manager.poll_once``); returns the counter to read."""
    manager = server.manager
    poll_once = manager.poll_once
    done = [0]

    def counted(*args, **kwargs):
        try:
            return poll_once(*args, **kwargs)
        finally:
            done[0] += 1

    manager.poll_once = counted
    return lambda: done[0]


def client_ports(port: int) -> set[int]:
    """Local ports of this process's established TCP connections to 127.0.0.1:``port``."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                if remote == port and fields[3] == "01" and fields[9] in inodes:
                    ports.add(local)
    return ports


# TF Serving's own tests and test models, copied unchanged (../shared/tfserving/README.md).
SHARED_TFSERVING = Path(
    os.environ.get(
        "MEDFLOW_SHARED_TFSERVING", Path(__file__).resolve().parents[3] / "shared" / "tfserving"
    )
)
TFSERVING_TESTDATA = SHARED_TFSERVING / "tensorflow_serving/servables/tensorflow/testdata"


def tfserving_testdata() -> Path:
    """TF Serving's test models (half_plus_two, ...), or a skip naming where they were looked for."""
    import pytest

    if not TFSERVING_TESTDATA.is_dir():
        pytest.skip(
            f"TF Serving's test data not found at {TFSERVING_TESTDATA} (MEDFLOW_SHARED_TFSERVING)"
        )
    return TFSERVING_TESTDATA
