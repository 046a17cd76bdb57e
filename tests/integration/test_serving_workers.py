"""``medflow serve --workers 2``: two processes on one port, summed metrics, a dead worker
replaced, SIGTERM stops everything; ``--grpc-channel-arguments`` reaches every worker."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from medflow.serving.client import PredictionClient
from medflow.serving.tensors import fill_tensor_proto, to_ndarray
from tests.conftest import REPO
from tests.integration.test_serving_helpers import (
    add_version,
    client_ports,
    images,
    in_process,
    wait_until,
)

COUNT = ":tensorflow:serving:request_count"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purposes
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _predict_on_new_connection(port: int, x: np.ndarray) -> np.ndarray:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "demo"
        fill_tensor_proto(request.inputs["image"], x)
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=30
        )
        return to_ndarray(response.outputs["probabilities"], "probabilities")


def _count(rest_port: int) -> float:
    """Predict requests answered OK, as the scraped worker reports them (parsed with
    prometheus_client's parser)."""
    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    want = {"entrypoint": "GRPC", "model_name": "demo", "status": "OK"}
    for family in text_string_to_metric_families(text):
        if family.name == COUNT:
            assert family.type == "counter"
            return sum(s.value for s in family.samples if s.labels == want)
    return 0.0


def test_workers_share_ports_and_metrics_and_are_replaced(tmp_path):
    add_version(tmp_path, 1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "medflow.cli", "serve", "--model-base", str(tmp_path)]
    cmd += ["--grpc-port", "0", "--rest-port", "0", "--poll-seconds", "0", "--workers", "2"]
    stderr = open(tmp_path / "stderr.txt", "w+")  # noqa: SIM115 (read while it runs)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(
            r"gRPC on [\d.]+:(\d+), REST on [\d.]+:(\d+) \(2 worker processes: (\d+) (\d+)\)", line
        )
        assert match, line + open(tmp_path / "stderr.txt").read()
        grpc_port, rest_port = int(match.group(1)), int(match.group(2))
        workers = [int(match.group(3)), int(match.group(4))]

        # Twelve new connections: the kernel spreads them over both workers; every answer is
        # the model's, and the metrics of whichever worker is scraped count all twelve.
        x = images(2, seed=3)
        expected = in_process(1, image=x)["probabilities"]
        for _ in range(12):
            np.testing.assert_allclose(
                _predict_on_new_connection(grpc_port, x), expected, atol=1e-5
            )
        assert _count(rest_port) == 12  # counted as answered, by whichever worker answered

        # A worker killed outright is replaced; once the new one serves, requests are answered
        # and the dead worker's counts stay in the sum (the counter never goes down; workers
        # write their counts to shared memory-mapped files as they count, so none are lost).
        os.kill(workers[0], signal.SIGKILL)
        wait_until(
            lambda: open(tmp_path / "stderr.txt").read().count("serving ['demo']") >= 3,
            timeout=60,
            what="the supervisor to replace the worker",
        )
        assert "exited with code -9; starting a new one" in open(tmp_path / "stderr.txt").read()
        for _ in range(6):
            np.testing.assert_allclose(
                _predict_on_new_connection(grpc_port, x), expected, atol=1e-5
            )
        assert _count(rest_port) == 18

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not any(_alive(pid) for pid in workers[1:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()


def test_a_worker_that_cannot_start_stops_the_server_with_its_error(tmp_path):
    add_version(tmp_path, 1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with socket.socket() as taken:  # a port held by another program (no SO_REUSEPORT)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "medflow.cli", "serve", "--model-base", str(tmp_path)]
        cmd += ["--grpc-port", str(port), "--rest-port", "-1", "--poll-seconds", "0"]
        out = subprocess.run(
            cmd + ["--workers", "2"], capture_output=True, text=True, env=env, timeout=120
        )
    assert out.returncode != 0
    assert f"cannot bind gRPC port 127.0.0.1:{port}" in out.stderr, out.stderr[-2000:]
    assert "before serving" in out.stderr, out.stderr[-2000:]
    assert not out.stdout.startswith("serving")


def test_connection_age_moves_a_client_to_new_connections_without_failures(tmp_path):
    # TF Serving's --grpc_channel_arguments, as the Kubernetes Deployment sets it: a server
    # that closes connections after a while makes clients reconnect, so that balancing per
    # connection (--workers, a Kubernetes Service) spreads a long-lived client again.
    add_version(tmp_path, 1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "medflow.cli", "serve", "--model-base", str(tmp_path)]
    cmd += ["--grpc-port", "0", "--rest-port", "-1", "--poll-seconds", "0", "--workers", "2"]
    cmd += [
        "--grpc-channel-arguments",
        "grpc.max_connection_age_ms=300,grpc.max_connection_age_grace_ms=5000",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"gRPC on [\d.]+:(\d+)", line)
        assert match, line + proc.stderr.read()
        port = int(match.group(1))
        x = images(2, seed=5)
        expected = in_process(1, image=x)["probabilities"]
        seen: set[int] = set()
        with PredictionClient(f"127.0.0.1:{port}", retries=0) as client:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                pred = client.predict("demo", {"image": x})  # retries=0: any failure raises
                np.testing.assert_allclose(pred.outputs["probabilities"], expected, atol=1e-5)
                seen |= client_ports(port)
                time.sleep(0.02)  # pacing: calls spread over the 3 s (the behaviour under test)
        assert len(seen) >= 3, seen  # a new connection at least every 300 ms
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_malformed_grpc_channel_arguments_are_refused_before_loading(tmp_path):
    add_version(tmp_path, 1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "medflow.cli", "serve", "--model-base", str(tmp_path)]
    cmd += ["--grpc-port", "0", "--rest-port", "-1", "--workers", "2"]
    cmd += ["--grpc-channel-arguments", "grpc.max_connection_age_ms"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    assert "--grpc-channel-arguments: 'grpc.max_connection_age_ms' is not name=value" in out.stderr
    assert not out.stdout.startswith("serving")
