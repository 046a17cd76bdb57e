"""Predict latency and throughput: embedded server (gRPC, REST) vs the same signature in-process.

One run (about 8 minutes on 2 cores), for each model (``--models``):

* ``demo``: the demo CNN (:mod:`serving.demo_model`) at ``--size`` (28x28x1, the project's
  default input) -- tiny, so per-request overhead dominates;
* ``resnet18``: the pipeline's own classifier (``components.models.backbones.build_model``,
  ``backbone=auto`` = ResNet-18 at this size) at 224x224x1, untrained weights behind the same
  ``serving_default`` interface -- the clinical-size case, where the model cost dominates.

Measured per model:

* p50/p99 latency and calls/s of one client calling Predict over gRPC -- ``gRPC``: the official
  ``PredictionServiceStub`` with protobuf's encoding, as any TF Serving client; ``gRPC medflow``:
  medflow's ``PredictionClient``, which copies each tensor once (``serving.wire``) -- request
  encoding included, and REST (``:predict`` row format,
  keep-alive, JSON encoding included) at batch 1 and 32, interleaved with in-process calls of
  the same ``serving_default`` signature of the same SavedModel (REST at batch 32 is skipped
  for the 224 model: a 6.4 MB float array as JSON measures the JSON codec, not serving);
* images/s of N concurrent gRPC clients at batch 1, as separate client processes (how real
  clients arrive) and as threads of one process (all clients share one GIL), against a server
  without and with server-side batching (``num_batch_threads`` = cores, and 1; each
  ``--batch-timeout-us``: 0, and 50 ms, longer than a batch of the 224 model takes on 2
  cores, so that a batch waits for every client), next to
  in-process calls at batch N (measured before and after, averaged); the mean batch size each
  batching server formed comes from its Prometheus metrics;
* the gRPC floor: the same latency and concurrent measurements against a Python gRPC server
  that decodes each request as ``medflow serve`` does and answers the real server's response
  bytes without running a model (no TensorFlow in it). In-process time plus the floor's
  latency is the best ratio a one-process Python gRPC server could reach here, and the
  floor's concurrent rate over the in-process batched rate is the best batching ratio; both
  are printed next to the targets. Each concurrent run also reports the share of the
  machine's cores that were busy (``/proc/stat``): where the floor run alone keeps every core
  busy, clients and server share the cores, each request costs the machine 1/floor-rate
  before the model's 1/in-process-rate, and the best batching ratio is
  1 / (1 + in-process rate / floor rate). Where cores are left idle, clients that wait for
  each answer bound it instead: N / (floor p50 + in-process p50, batch 1) images/s, about.

``--server-workers N`` runs every server as ``medflow serve --workers N``; ``--skip-latency``
repeats only the concurrent runs (the floor stays one process).

Every server runs as ``medflow serve`` in its own process, as in production. Client
processes, client threads and the servers share the machine's cores (``os.cpu_count()`` is
printed): on a small machine the clients' own gRPC work competes with the server.
Results go in BENCHMARKS.md.

Usage: .venv/bin/python benchmarks/serving.py [--seconds 3] [--clients 8] [--models demo,resnet18]
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# google-api-core, which TensorFlow imports, warns on every import that Python 3.10 is past
# its support (the stack pins 3.10; medflow's CLI hides the same notice). Module level, so
# that the spawned client and floor processes, which import this module, hide it too.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")

BATCHING = """
max_batch_size {{ value: {max_batch} }}
batch_timeout_micros {{ value: {timeout_us} }}
max_enqueued_batches {{ value: 100 }}
num_batch_threads {{ value: {threads} }}
"""
MODEL = "bench"
# Share of busy cores above which a concurrent run counts as limited by the machine's CPU.
SATURATED = 0.95


def measure(calls: dict, seconds: float, rounds: int = 6, warmup_s: float = 1.0) -> dict:
    """Latencies of back-to-back calls of each path, interleaved in ``rounds`` slices.

    The machine is shared: interleaving gives every path the same background load, so the
    ratios hold even when absolute numbers drift. Each path gets at least one call a slice.
    """
    lat: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        end = time.perf_counter() + warmup_s
        for i in range(20):
            call()
            if i >= 1 and time.perf_counter() > end:
                break
    for _ in range(rounds):
        for name, call in calls.items():
            end = time.perf_counter() + seconds / rounds
            while True:
                now = time.perf_counter()
                call()
                lat[name].append(time.perf_counter() - now)
                if time.perf_counter() >= end:
                    break
    out = {}
    for name, values in lat.items():
        values.sort()
        out[name] = {
            "p50_ms": 1e3 * statistics.median(values),
            "p99_ms": 1e3 * values[min(len(values) - 1, int(0.99 * len(values)))],
            "calls_s": len(values) / sum(values),
            "n": len(values),
        }
    return out


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores since boot (/proc/stat), None where unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_fraction(before, after) -> float | None:
    """Share of the machine's cores that were busy between two :func:`cpu_times` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def threads_throughput(
    port: int, x: np.ndarray, clients: int, seconds: float
) -> tuple[float, float | None]:
    """(calls/s, busy share of the cores) of ``clients`` threads of this process, each with
    its own channel."""
    calls = [grpc_call(port, x) for _ in range(clients)]
    for call in calls:
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
    cpu = cpu_times()
    time.sleep(seconds)
    stop.set()
    busy = busy_fraction(cpu, cpu_times())
    done = sum(counts)
    elapsed = time.perf_counter() - started
    for t in threads:
        t.join()
    return done / elapsed, busy


def _client_process(conn) -> None:
    """A client process: per job, open a channel and warm up, then call Predict in a window."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tensorflow_serving.apis import predict_pb2  # noqa: F401 (import before the first job)

    while True:
        job = conn.recv()
        if job is None:
            return
        port, shape = job
        x = np.random.default_rng(os.getpid()).normal(100, 30, shape).astype(np.float32)
        call = grpc_call(port, x)
        call()
        conn.send("ready")
        start_at, stop_at = conn.recv()
        while time.time() < start_at:
            time.sleep(0.001)
        count = 0
        while time.time() < stop_at:
            call()
            count += 1
        conn.send(count)


class ClientProcesses:
    """``n`` client processes (spawned: no TensorFlow or gRPC state is inherited)."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self._conns, self._procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_process, args=(child,), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    def throughput(self, port: int, shape: tuple, seconds: float) -> tuple[float, float | None]:
        """(calls/s, busy share of the cores) of all processes calling together for ``seconds``
        (after all are connected).

        Calls still in flight at the end are not counted (as with the threads).
        """
        for conn in self._conns:
            conn.send((port, shape))
        for conn in self._conns:
            if conn.recv() != "ready":
                raise RuntimeError("client process failed")
        start_at = time.time() + 0.2
        for conn in self._conns:
            conn.send((start_at, start_at + seconds))
        time.sleep(max(0.0, start_at - time.time()))
        cpu = cpu_times()
        time.sleep(max(0.0, start_at + seconds - time.time()))
        busy = busy_fraction(cpu, cpu_times())
        return sum(conn.recv() for conn in self._conns) / seconds, busy

    def close(self) -> None:
        for conn in self._conns:
            conn.send(None)
        for proc in self._procs:
            proc.join(timeout=30)


def _floor_server(conn) -> None:
    """The gRPC floor: a Python gRPC server that answers Predict with no model and no TensorFlow.

    It decodes each request as ``medflow serve`` does (:func:`serving.tensors.parse_split`) and
    answers the bytes the real server answered for that batch size (received over ``conn``), so
    a client does exactly the work it does against the real server. What it costs is what any
    Python gRPC server costs on this machine before it runs a model.
    """
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2

    from medflow.serving.grpc_service import PREDICTION_SERVICE
    from medflow.serving.tensors import parse_split

    responses: dict[int, bytes] = conn.recv()

    def decode(raw: bytes):
        return parse_split(predict_pb2.PredictRequest, raw, "inputs")[0]

    def predict(request, context):
        return responses[request.inputs["image"].tensor_shape.dim[0].size]

    limits = [("grpc.max_receive_message_length", 2**30), ("grpc.max_send_message_length", 2**30)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=limits)
    handler = grpc.unary_unary_rpc_method_handler(predict, request_deserializer=decode)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(PREDICTION_SERVICE, {"Predict": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    conn.send(port)
    conn.recv()  # anything: stop
    server.stop(0)


class FloorServer:
    """:func:`_floor_server` in a spawned process, answering ``responses`` (batch -> bytes)."""

    def __init__(self, responses: dict[int, bytes]) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._conn = parent
        self._proc = ctx.Process(target=_floor_server, args=(child,), daemon=True)
        self._proc.start()
        parent.send(responses)
        self.port: int = parent.recv()

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(timeout=30)


def predict_response(fn, x: np.ndarray) -> bytes:
    """The serialized PredictResponse ``medflow serve`` answers for ``x`` (in-process outputs)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from medflow.serving.tensors import serialize_with_tensors

    response = predict_pb2.PredictResponse()
    response.model_spec.name = MODEL
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    outputs = {k: v.numpy() for k, v in fn(image=tf.constant(x)).items()}
    # typed fields (float_val, ...), as the server answers since issue 22 (TF Serving's way)
    return serialize_with_tensors(response, "outputs", outputs, typed=True)


def start_server(
    base: Path, batching_file: Path | None, workers: int = 1
) -> tuple[subprocess.Popen, int, int]:
    from tests.integration.test_serving_helpers import free_port

    grpc_port, rest_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "medflow.cli", "serve", "--model-base", str(base)]
    cmd += ["--grpc-port", str(grpc_port), "--rest-port", str(rest_port), "--poll-seconds", "0"]
    cmd += ["--workers", str(workers)]
    if batching_file:
        cmd += ["--batching-parameters", str(batching_file)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    return proc, grpc_port, rest_port


def wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline().decode()
    if not line.startswith("serving"):
        raise RuntimeError(f"medflow serve did not start: {line!r}")


def batch_sizes(rest_port: int) -> tuple[float, int]:
    """(sum of rows, number of batches) the server executed, from its Prometheus metrics."""
    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    name = ":tensorflow:serving:batching_session:processed_batch_size"
    total = re.search(rf'{re.escape(name)}_sum{{model_name="{MODEL}"}} ([\d.]+)', text)
    count = re.search(rf'{re.escape(name)}_count{{model_name="{MODEL}"}} (\d+)', text)
    return (float(total.group(1)), int(count.group(1))) if total and count else (0.0, 0)


def grpc_call(port: int, x: np.ndarray, model: str = MODEL, output: str = "probabilities"):
    """One Predict over a fresh channel per client; the request is encoded on every call."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from medflow.serving.tensors import fill_tensor_proto, to_ndarray

    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 2**30)]
        )
    )

    def call():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        fill_tensor_proto(request.inputs["image"], x)
        response = stub.Predict(request, timeout=120)
        return to_ndarray(response.outputs[output], output)

    return call


def client_call(port: int, x: np.ndarray):
    """One Predict through medflow's PredictionClient (tensors copied once each way)."""
    from medflow.serving.client import PredictionClient

    client = PredictionClient(
        f"127.0.0.1:{port}", timeout_s=120, retries=0, max_message_bytes=2**30
    )

    def call():
        return client.predict(MODEL, {"image": x}).outputs["probabilities"]

    return call


def rest_call(port: int, x: np.ndarray):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call():
        conn.request("POST", f"/v1/models/{MODEL}:predict", json.dumps({"instances": x.tolist()}))
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(body)
        return np.array([p["probabilities"] for p in json.loads(body)["predictions"]])

    return call


def in_process_call(fn, x: np.ndarray, output: str = "probabilities"):
    import tensorflow as tf

    def call():
        return fn(image=tf.constant(x))[output].numpy()

    return call


def export_resnet18(base: Path, size: int) -> str:
    """The pipeline's classifier (untrained) at ``size`` behind medflow's serving signature."""
    import tensorflow as tf

    from medflow.components.models.backbones import build_model
    from medflow.components.models.hparams import HParams
    from medflow.components.tasks.classification.export import classification_head

    hp = HParams(image_size=(size, size), channels=1, augment=False, seed=0)
    model = build_model(hp)
    head = classification_head(hp.labels)

    class Module(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self._keras_state = [getattr(v, "value", v) for v in model.variables]

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32, "image")])
        def serving_default(self, image):
            # Per-image standardisation stands in for the Transform graph, as in demo_model.
            mean, var = tf.nn.moments(image, axes=[1, 2, 3], keepdims=True)
            z = (image - mean) / tf.sqrt(var + 1e-6)
            return head(tf.cast(self.model(z, training=False), tf.float32))

    module = Module()
    final = base / MODEL / "1"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".1-", dir=final.parent))
    tf.saved_model.save(
        module, str(tmp / "m"), signatures={"serving_default": module.serving_default}
    )
    os.replace(tmp / "m", final)
    shutil.rmtree(tmp, ignore_errors=True)
    return f"pipeline ResNet-18 (backbone=auto, width {hp.width}, untrained), {size}x{size}x1"


def bench_model(kind: str, args, tmp: Path, clients: ClientProcesses) -> dict:
    import tensorflow as tf

    from tests.support.demo_model import export_demo_model

    base = tmp / kind / "models"
    size = args.size if kind == "demo" else 224
    if kind == "demo":
        export_demo_model(base, MODEL, 1, size=(size, size))
        desc = f"demo CNN (serving.demo_model), {size}x{size}x1"
    else:
        desc = export_resnet18(base, size)
    n = args.clients
    max_batch = args.max_batch_size or n
    # One server without batching and one per batch timeout and num_batch_threads value
    # (TF Serving's advice is the number of cores; 1 lets a batch fill while the previous one
    # runs).
    servers = {"no batching": start_server(base, None, args.server_workers)}
    for timeout_us in args.batch_timeout_us:
        for threads in sorted({os.cpu_count(), 1}, reverse=True):
            config = tmp / kind / f"batching-{timeout_us}-{threads}.config"
            config.write_text(
                BATCHING.format(max_batch=max_batch, timeout_us=timeout_us, threads=threads)
            )
            name = f"batching, {threads} thr, {timeout_us / 1000:g} ms"
            servers[name] = start_server(base, config, args.server_workers)
    _, plain_grpc, plain_rest = servers["no batching"]
    result: dict = {"model": desc, "latency": [], "concurrent": {}}
    floor = None
    try:
        fn = tf.saved_model.load(str(base / MODEL / "1")).signatures["serving_default"]
        floor = FloorServer(
            {b: predict_response(fn, np.full((b, size, size, 1), 100, np.float32)) for b in (1, 32)}
        )
        # This process holds TensorFlow for the in-process baseline; a real client does not.
        # Freeze its heap (as the server does) so that the clients' JSON lists do not set off
        # full collections over TensorFlow's objects.
        gc.freeze()
        for proc, _, _ in servers.values():
            wait_ready(proc)
        rng = np.random.default_rng(0)
        print(f"\n== {desc}", flush=True)
        if not args.skip_latency:
            print(
                f"{'path':<12}{'batch':>6}{'p50 ms':>9}{'p99 ms':>9}{'calls/s':>9}{'n':>6}"
                f"{'p50 x':>7}"
            )
        for batch in () if args.skip_latency else (1, 32):
            x = rng.normal(100, 30, (batch, size, size, 1)).astype(np.float32)
            calls = {
                "in-process": in_process_call(fn, x),
                "gRPC": grpc_call(plain_grpc, x),
                "gRPC medflow": client_call(plain_grpc, x),
            }
            if not (kind == "resnet18" and batch == 32):
                calls["REST"] = rest_call(plain_rest, x)
            expected = calls["in-process"]()
            for call in calls.values():
                np.testing.assert_allclose(call(), expected, atol=1e-5)
            calls["gRPC floor"] = grpc_call(floor.port, x)  # no model: what gRPC alone costs
            results = measure(calls, 3 * args.seconds)
            base_p50 = results["in-process"]["p50_ms"]
            for name, r in results.items():
                ratio = r["p50_ms"] / base_p50
                result["latency"].append({"path": name, "batch": batch, **r, "ratio": ratio})
                print(
                    f"{name:<12}{batch:>6}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                    f"{r['calls_s']:>9.1f}{r['n']:>6}{ratio:>7.2f}",
                    flush=True,
                )
        x1 = rng.normal(100, 30, (1, size, size, 1)).astype(np.float32)
        xn = np.repeat(x1, max_batch, axis=0)
        conc = result["concurrent"]

        def in_process_batched() -> float:
            timing = measure({"b": in_process_call(fn, xn)}, args.seconds, rounds=1)["b"]
            return max_batch * timing["calls_s"]

        def concurrent(mode: str, port: int) -> tuple[float, float | None]:
            if mode == "processes":
                return clients.throughput(port, x1.shape, args.seconds)
            return threads_throughput(port, x1, n, args.seconds)

        # The in-process baseline brackets the concurrent runs (the machine's load drifts).
        first = in_process_batched()
        for mode in ("processes", "threads"):
            for server, (_, port, rest) in servers.items():
                before = batch_sizes(rest)
                rate, busy = concurrent(mode, port)
                after = batch_sizes(rest)
                batches = after[1] - before[1]
                mean_batch = (after[0] - before[0]) / batches if batches else None
                conc[(mode, server)] = (rate, mean_batch, busy)
            rate, busy = concurrent(mode, floor.port)
            conc[(mode, "gRPC floor")] = (rate, None, busy)
        last = in_process_batched()
        inproc = conc["in-process"] = (first + last) / 2
        print(
            f"{n} concurrent gRPC clients at batch 1 (images/s, vs in-process batch {max_batch}, "
            f"mean of {first:.1f} before and {last:.1f} after):"
        )
        print(f"  in-process, batch {max_batch}:                {inproc:9.1f}")
        for (mode, server), (rate, mean_batch, busy) in (
            (k, v) for k, v in conc.items() if k != "in-process"
        ):
            extra = f"  cores busy {100 * busy:3.0f} %" if busy is not None else ""
            extra += f"  mean batch {mean_batch:.2f}" if mean_batch is not None else ""
            print(f"  {mode:<9} {server:<24}: {rate:9.1f}  ({rate / inproc:.2f}x){extra}")
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
        if floor is not None:
            floor.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", type=int, default=28, help="demo model image rows = cols")
    parser.add_argument("--models", default="demo,resnet18", help="demo and/or resnet18")
    parser.add_argument(
        "--batch-timeout-us",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[0, 50_000],
        help="server batch_timeout_micros values, comma-separated (default 0,50000: 0 is TF "
        "Serving's starting point on CPU-only machines, with num_batch_threads = cores; 50 ms "
        "outlasts a batch of the 224 model on 2 cores, so batches wait for every client)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=0,
        help="server max_batch_size and the in-process batch (default: --clients)",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="apply serving.memory.keep_freed_memory in this (client and in-process) process too; "
        "servers always run with it, as medflow serve does by default",
    )
    parser.add_argument(
        "--skip-latency",
        action="store_true",
        help="only the concurrent runs (for example to repeat them with --server-workers)",
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="medflow serve --workers: server processes sharing each server's ports",
    )
    args = parser.parse_args()
    if args.keep_freed_memory:
        from medflow.serving.memory import keep_freed_memory

        keep_freed_memory()
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    bad = [k for k in kinds if k not in ("demo", "resnet18")]
    if bad:
        parser.error(f"--models: unknown {bad}; use demo and/or resnet18")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Channels left open when a server stops log its GOAWAY at INFO; the spawned client
    # processes inherit this.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    print(f"cpu cores: {os.cpu_count()} (shared by servers and clients), load average {load:.1f}")
    print(
        f"batching: max_batch_size {args.max_batch_size or args.clients}, batch_timeout_micros {args.batch_timeout_us}, "
        f"num_batch_threads {os.cpu_count()} (= cores) and 1",
    )
    print(
        "malloc keeps freed memory: servers yes (medflow serve's default), this process "
        f"{'yes' if args.keep_freed_memory else 'no'}; server processes per server: "
        f"{args.server_workers}",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="medflow-bench-"))
    clients = ClientProcesses(args.clients)
    results = []
    try:
        for kind in kinds:
            results.append(bench_model(kind, args, tmp, clients))
    finally:
        clients.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\ntargets:")
    for r in results:
        print(f"  {r['model']}")
        at32 = {x["path"]: x for x in r["latency"] if x["batch"] == 32}
        if at32:
            # A server that added nothing to gRPC's own cost and ran the model as fast as the
            # in-process call would reach this ratio: the best a one-process Python gRPC server
            # can do here.
            best = 1 + at32["gRPC floor"]["ratio"]
            for path in ("gRPC", "gRPC medflow"):
                print(
                    f"    {path} p50 / in-process p50 at batch 32: {at32[path]['ratio']:.2f} "
                    f"(target <= 1.5; in-process + gRPC floor: {best:.2f})"
                )
        conc = r["concurrent"]
        inproc = conc["in-process"]
        at1 = {x["path"]: x for x in r["latency"] if x["batch"] == 1}
        for key, value in conc.items():
            if key != "in-process" and key[1].startswith("batching"):
                floor_rate, _, floor_busy = conc[(key[0], "gRPC floor")]
                bound = f"gRPC floor with no model: {floor_rate / inproc:.2f}"
                if at1:
                    # A client that waits for each answer completes at most one request per
                    # gRPC round trip (the floor's) plus the model's time for it (batch 1 at
                    # best), even with a server process per client and idle cores.
                    turn_s = (at1["gRPC floor"]["p50_ms"] + at1["in-process"]["p50_ms"]) / 1000
                    bound += f"; clients that wait, about: {args.clients / turn_s / inproc:.2f}"
                if floor_busy is not None and floor_busy >= SATURATED:
                    # The floor run kept every core busy with gRPC work alone, so each request
                    # costs 1/floor_rate of the machine before the model's 1/inproc.
                    bound += f"; with the cores shared: {1 / (1 + inproc / floor_rate):.2f}"
                print(
                    f"    {key[1]} ({key[0]}) / in-process batched: {value[0] / inproc:.2f} "
                    f"(target >= 0.8; {bound})"
                )
    print(f"total {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
