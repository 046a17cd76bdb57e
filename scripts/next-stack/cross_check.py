"""Cross-stack check (issue 26): run with one stack's Python on the other stack's outputs.

    python scripts/next-stack/cross_check.py --spec SPEC --model-base BASE --model NAME \
        --dicom DIR [--limit 64] --out result.json

1. The compiled Kubeflow spec (YAML package or JSON PipelineJob) parses as this stack's
   ``kfp.pipeline_spec`` PipelineSpec.
2. ``medflow serve`` of this stack serves the pushed SavedModels under BASE, and ``medflow
   predict`` scores the first LIMIT DICOM files under DIR through it (gRPC).

Writes what it saw (versions, pipeline name and tasks, one score per file) as JSON, so the
two stacks' scores of one model can be compared file by file (scripts/next-stack/cross-check.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from medflow.core.files import atomic_write


def load_spec(path: Path) -> dict:
    """The PipelineSpec of a compiled package, parsed by this stack's kfp-pipeline-spec."""
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    text = path.read_text()
    doc = json.loads(text) if path.suffix == ".json" else next(yaml.safe_load_all(text))
    spec = json_format.ParseDict(
        doc.get("pipelineSpec", doc), pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False
    )
    return {"name": spec.pipeline_info.name, "tasks": sorted(spec.root.dag.tasks)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"cross_check: medflow serve exited with {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"cross_check: medflow serve did not listen on {port} in {timeout:.0f} s")


def serve_and_predict(model_base: Path, model: str, files: list[Path]) -> list[dict]:
    """Predictions of ``files`` through this stack's ``medflow serve`` on ``model_base``."""
    medflow = str(Path(sys.executable).with_name("medflow"))
    port = _free_port()
    server = subprocess.Popen(
        [medflow, "serve", "--model-base", str(model_base), "--host", "127.0.0.1",
         "--grpc-port", str(port), "--rest-port", "-1"],
    )  # fmt: skip
    try:
        _wait_for_port(port, server)
        out = subprocess.run(
            [medflow, "predict", "--server", f"127.0.0.1:{port}", "--model", model,
             "--model-base", str(model_base), "--json", *map(str, files)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if out.returncode:
            raise SystemExit(f"cross_check: medflow predict failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout)
    finally:
        server.terminate()
        server.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--model-base", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dicom", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import tensorflow as tf
    import tfx

    files = sorted(p for p in args.dicom.rglob("*.dcm"))[: args.limit]
    if not files:
        raise SystemExit(f"cross_check: no .dcm files under {args.dicom}")
    result = {
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "tfx": tfx.__version__,
        "spec": {"path": str(args.spec), **load_spec(args.spec)},
        "model_base": str(args.model_base),
        "predictions": serve_and_predict(args.model_base, args.model, files),
    }
    atomic_write(args.out, json.dumps(result, indent=1, default=str))
    print(f"cross_check: spec {result['spec']['name']} ({len(result['spec']['tasks'])} tasks) "
          f"parsed; {len(result['predictions']['predictions'])} predictions from {args.model_base} on "
          f"TF {tf.__version__} / Python {result['python']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
