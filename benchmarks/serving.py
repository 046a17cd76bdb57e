"""Predict latency and throughput: embedded server (gRPC, REST) vs the SavedModel in-process.

One run (about 1-2 minutes on 2 cores):

* p50/p99 latency and throughput of one client calling Predict over gRPC (official
  PredictionServiceStub) and REST (``:predict`` row format, keep-alive connection) at batch 1
  and 32, next to calling the same ``serving_default`` signature in-process;
* images/s of N concurrent gRPC clients sending batch 1, served without and with server-side
  batching, next to in-process calls at batch N.

The server runs as ``medflow serve`` in its own process, as in production; the client side
(request encoding, JSON) is part of every measured call. Results go in BENCHMARKS.md.

Usage: .venv/bin/python benchmarks/serving.py [--seconds 3] [--clients 8] [--size 28]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BATCHING = """
max_batch_size {{ value: {max_batch} }}
batch_timeout_micros {{ value: {timeout_us} }}
max_enqueued_batches {{ value: 100 }}
num_batch_threads {{ value: 2 }}
"""


def measure(calls: dict, seconds: float, rounds: int = 6, warmup: int = 20) -> dict:
    """Latencies of back-to-back calls of each path, interleaved in ``rounds`` slices.

    The machine is shared: interleaving gives every path the same background load, so the
    ratios hold even when absolute numbers drift.
    """
    lat: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(warmup):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            end = time.perf_counter() + seconds / rounds
            while (now := time.perf_counter()) < end:
                call()
                lat[name].append(time.perf_counter() - now)
    out = {}
    for name, values in lat.items():
        values.sort()
        out[name] = {
            "p50_ms": 1e3 * statistics.median(values),
            "p99_ms": 1e3 * values[min(len(values) - 1, int(0.99 * len(values)))],
            "calls_s": len(values) / sum(values),
        }
    return out


def concurrent(make_call, clients: int, seconds: float) -> float:
    """Calls per second of ``clients`` threads, each with its own ``make_call()``."""
    calls = [make_call() for _ in range(clients)]
    for call in calls:
        for _ in range(5):
            call()
    counts = [0] * clients
    stop = threading.Event()

    def run(i: int) -> None:
        while not stop.is_set():
            calls[i]()
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def start_server(base: Path, batching_file: Path | None) -> tuple[subprocess.Popen, int, int]:
    from tests.integration.test_serving_helpers import free_port

    grpc_port, rest_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "medflow.cli", "serve", "--model-base", str(base)]
    cmd += ["--grpc-port", str(grpc_port), "--rest-port", str(rest_port), "--poll-seconds", "0"]
    if batching_file:
        cmd += ["--batching-parameters", str(batching_file)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    return proc, grpc_port, rest_port


def wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline().decode()
    if not line.startswith("serving"):
        raise RuntimeError(f"medflow serve did not start: {line!r}")


def grpc_call(port: int, x: np.ndarray):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.tensors import to_ndarray, to_tensor_proto

    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{port}")
    )

    def call():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "demo"
        request.inputs["image"].CopyFrom(to_tensor_proto(x))
        response = stub.Predict(request, timeout=30)
        return to_ndarray(response.outputs["probabilities"], "probabilities")

    return call


def rest_call(port: int, x: np.ndarray):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call():
        conn.request("POST", "/v1/models/demo:predict", json.dumps({"instances": x.tolist()}))
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(body)
        return np.array([p["probabilities"] for p in json.loads(body)["predictions"]])

    return call


def in_process_call(fn, x: np.ndarray):
    import tensorflow as tf

    def call():
        return fn(image=tf.constant(x))["probabilities"].numpy()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", type=int, default=28, help="image rows = cols")
    parser.add_argument("--batch-timeout-us", type=int, default=2000)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from serving.demo_model import export_demo_model

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="medflow-bench-"))
    export_demo_model(tmp / "models", "demo", 1, size=(args.size, args.size))
    batching_file = tmp / "batching.config"
    batching_file.write_text(
        BATCHING.format(max_batch=args.clients, timeout_us=args.batch_timeout_us)
    )
    plain, plain_grpc, plain_rest = start_server(tmp / "models", None)
    batched, batched_grpc, _ = start_server(tmp / "models", batching_file)
    try:
        fn = tf.saved_model.load(str(tmp / "models" / "demo" / "1")).signatures["serving_default"]
        wait_ready(plain)
        wait_ready(batched)
        rng = np.random.default_rng(0)
        rows = []
        print(f"cpu cores: {os.cpu_count()}, image {args.size}x{args.size}x1 float32, demo CNN")
        print(f"{'path':<12}{'batch':>6}{'p50 ms':>9}{'p99 ms':>9}{'calls/s':>9}{'p50 x':>7}")
        for batch in (1, 32):
            x = rng.normal(100, 30, (batch, args.size, args.size, 1)).astype(np.float32)
            calls = {
                "in-process": in_process_call(fn, x),
                "gRPC": grpc_call(plain_grpc, x),
                "REST": rest_call(plain_rest, x),
            }
            expected = calls["in-process"]()
            for call in calls.values():
                np.testing.assert_allclose(call(), expected, atol=1e-5)
            results = measure(calls, 3 * args.seconds)
            base_p50 = results["in-process"]["p50_ms"]
            for name, r in results.items():
                ratio = r["p50_ms"] / base_p50
                rows.append((name, batch, r, ratio))
                print(
                    f"{name:<12}{batch:>6}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                    f"{r['calls_s']:>9.0f}{ratio:>7.2f}"
                )
        n = args.clients
        x1 = rng.normal(100, 30, (1, args.size, args.size, 1)).astype(np.float32)
        xn = np.repeat(x1, n, axis=0)
        inproc = (
            measure({"batched": in_process_call(fn, xn)}, args.seconds)["batched"]["calls_s"] * n
        )
        unbatched = concurrent(lambda: grpc_call(plain_grpc, x1), n, args.seconds)
        with_batching = concurrent(lambda: grpc_call(batched_grpc, x1), n, args.seconds)
        print(f"\n{n} concurrent gRPC clients at batch 1 (images/s):")
        print(f"  in-process, batch {n}:          {inproc:8.0f}")
        print(f"  server, no batching:          {unbatched:8.0f}  ({unbatched / inproc:.2f}x)")
        print(
            f"  server, batching (max {n}, {args.batch_timeout_us} us): "
            f"{with_batching:8.0f}  ({with_batching / inproc:.2f}x)"
        )
        grpc32 = next(r for r in rows if r[0] == "gRPC" and r[1] == 32)[3]
        print("\ntargets:")
        print(f"  gRPC p50 / in-process p50 at batch 32: {grpc32:.2f} (target <= 1.5)")
        print(
            f"  batching / in-process batched throughput: {with_batching / inproc:.2f} "
            "(target >= 0.8)"
        )
        print(f"total {time.perf_counter() - t0:.0f} s")
    finally:
        for proc in (plain, batched):
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
