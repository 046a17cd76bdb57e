"""PredictionClient robustness: retries on UNAVAILABLE, deadlines, message size limits."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from medflow.serving.client import PredictionClient
from medflow.serving.config import BatchingConfig
from medflow.serving.errors import PredictionError
from tests.integration.test_serving_helpers import (
    add_version,
    client_ports,
    free_port,
    images,
    in_process,
    start_server,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("models")
    add_version(path, 1)
    return path


def test_predict_status_and_signatures(base):
    server = start_server(base)
    try:
        with PredictionClient(f"127.0.0.1:{server.grpc_port}") as client:
            x = images(3)
            pred = client.predict("demo", {"image": x})
            assert (pred.model_name, pred.model_version) == ("demo", 1)
            np.testing.assert_allclose(
                pred.outputs["probabilities"], in_process(1, image=x)["probabilities"], atol=1e-6
            )
            assert client.status("demo") == [(1, "AVAILABLE")]
            assert set(client.signature_defs("demo")) == {
                "serving_default",
                "serve_examples",
                "classify",
            }
            with pytest.raises(PredictionError, match="NOT_FOUND"):
                client.predict("nope", {"image": x})
    finally:
        server.stop()


def test_each_client_has_its_own_connection(base):
    # Connection-level balancing (medflow serve --workers, a Kubernetes Service) can only
    # spread clients of one process when each holds its own connection.
    server = start_server(base)
    clients = [PredictionClient(f"127.0.0.1:{server.grpc_port}") for _ in range(3)]
    try:
        for client in clients:
            assert client.status("demo") == [(1, "AVAILABLE")]
        assert len(client_ports(server.grpc_port)) == 3
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_retries_until_a_late_server_is_up(base):
    port = free_port()
    started: list = []

    def start_late() -> None:
        time.sleep(1.0)  # the behaviour under test: no server for a while, the client retries
        started.append(start_server(base, grpc_port=port))

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        with PredictionClient(f"127.0.0.1:{port}", retries=8, backoff_s=0.1) as client:
            pred = client.predict("demo", {"image": images(1)})
        assert pred.model_version == 1
    finally:
        thread.join()
        for server in started:
            server.stop()


def test_no_retries_fails_fast_with_a_hint():
    with PredictionClient(f"127.0.0.1:{free_port()}", retries=0, timeout_s=5) as client:
        with pytest.raises(PredictionError, match="UNAVAILABLE.*is the server running"):
            client.predict("demo", {"image": images(1)})


def test_stopped_server_then_restart_on_the_same_port(base):
    server = start_server(base)
    port = server.grpc_port
    with PredictionClient(f"127.0.0.1:{port}", retries=2, backoff_s=0.05) as client:
        assert client.predict("demo", {"image": images(1)}).model_version == 1
        server.stop()
        with pytest.raises(PredictionError, match="UNAVAILABLE"):
            client.predict("demo", {"image": images(1)})
        restarted: list = []
        timer = threading.Timer(0.5, lambda: restarted.append(start_server(base, grpc_port=port)))
        timer.start()
        try:
            client.retries = 10
            assert client.predict("demo", {"image": images(1)}).model_version == 1
        finally:
            timer.join()
            for s in restarted:
                s.stop()


def test_deadline_exceeded_is_not_retried(base):
    # A batch that waits 3 s for company makes the server slower than the client's deadline.
    slow = BatchingConfig(max_batch_size=64, batch_timeout_micros=3_000_000, num_batch_threads=1)
    server = start_server(base, batching=slow)
    try:
        with PredictionClient(
            f"127.0.0.1:{server.grpc_port}", timeout_s=0.3, retries=3, backoff_s=1.0
        ) as client:
            started = time.monotonic()
            with pytest.raises(PredictionError, match="DEADLINE_EXCEEDED"):
                client.predict("demo", {"image": images(1)})
            # retried, it would have slept 1 s before the second attempt
            assert time.monotonic() - started < 1.0
    finally:
        server.stop()


def test_message_size_limits(base):
    server = start_server(base, max_message_bytes=2**20)
    target = f"127.0.0.1:{server.grpc_port}"
    too_big = images(2**20 // (28 * 28 * 4) + 10)  # just over 1 MiB
    try:
        # the client's own send limit
        with PredictionClient(target, max_message_bytes=2**16) as client:
            with pytest.raises(PredictionError, match="RESOURCE_EXHAUSTED"):
                client.predict("demo", {"image": images(40)})
        # the server's receive limit
        with PredictionClient(target, max_message_bytes=64 * 2**20) as client:
            with pytest.raises(PredictionError, match="RESOURCE_EXHAUSTED"):
                client.predict("demo", {"image": too_big})
            # a message under both limits goes through
            assert client.predict("demo", {"image": images(64)}).outputs["score"].shape == (64,)
    finally:
        server.stop()
