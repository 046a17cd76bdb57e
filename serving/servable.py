"""One loaded model version: its SavedModel, SignatureDefs and (optional) batch schedulers."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from medflow.serving.batching import BatchScheduler
from medflow.serving.config import BatchingConfig
from medflow.serving.errors import ServingStatus, invalid
from medflow.serving.tensors import check_inputs

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def read_signature_defs(version_dir: Path) -> dict:
    """SignatureDefs of the serving MetaGraph, read from saved_model.pb (what TF Serving reports)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    for graph in saved.meta_graphs:
        if "serve" in graph.meta_info_def.tags or len(saved.meta_graphs) == 1:
            return {k: v for k, v in graph.signature_def.items() if not k.startswith("__")}
    raise ValueError(f"{version_dir}: no MetaGraph tagged 'serve'")


class LoadedVersion:
    """A SavedModel version ready to answer requests.

    Args:
        name: model name.
        version: version number (the directory name).
        path: the version directory.
        batching: batching parameters, or None to run each request on its own.
        on_batch: metrics hook called with executed batch sizes.
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        batching: BatchingConfig | None = None,
        on_batch=None,
    ) -> None:
        import tensorflow as tf

        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path)
        self._model = tf.saved_model.load(str(path), tags=["serve"])
        self._functions = dict(self._model.signatures)
        self._batching = batching
        self._on_batch = on_batch
        self._schedulers: dict[str, BatchScheduler] = {}
        self._lock = threading.Lock()
        self._closed = False

    def signature(self, signature_name: str):
        """(name, SignatureDef) for a request's signature name ("" = serving_default)."""
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.signature_defs or key not in self._functions:
            import grpc

            raise ServingStatus(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            )
        return key, self.signature_defs[key]

    def run(
        self, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()
    ) -> dict[str, np.ndarray]:
        """Validate ``inputs`` against the signature and run it (batched when configured)."""
        key, sig = self.signature(signature_name)
        check_inputs(inputs, sig, key)
        unknown = [o for o in output_filter if o not in sig.outputs]
        if unknown:
            raise invalid(
                f"output_filter names {unknown} not in signature '{key}' outputs {sorted(sig.outputs)}"
            )
        scheduler = self._scheduler(key, sig)
        outputs = scheduler.submit(inputs) if scheduler else self._call(key, inputs)
        if output_filter:
            outputs = {k: outputs[k] for k in output_filter}
        return outputs

    def _call(self, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        try:
            result = self._functions[key](**{k: tf.constant(v) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise invalid(f"signature '{key}' rejected the input: {_first_line(exc)}") from exc
        return {k: v.numpy() for k, v in result.items()}

    def _scheduler(self, key: str, sig) -> BatchScheduler | None:
        if self._batching is None or not _batchable(sig):
            return None
        with self._lock:
            if self._closed:  # a request that raced an unload still gets an answer, unbatched
                return None
            if key not in self._schedulers:
                self._schedulers[key] = BatchScheduler(
                    lambda inputs: self._call(key, inputs),
                    self._batching,
                    name=f"batch-{self.name}-{self.version}",
                    on_batch=self._on_batch,
                )
            return self._schedulers[key]

    def close(self) -> None:
        """Drain and stop batch threads; the TF objects go when the last request lets go."""
        with self._lock:
            self._closed = True
            schedulers, self._schedulers = list(self._schedulers.values()), {}
        for s in schedulers:
            s.close()


def _batchable(sig) -> bool:
    """True when every input and output has a variable leading (batch) dimension."""
    infos = list(sig.inputs.values()) + list(sig.outputs.values())
    return bool(infos) and all(
        not i.tensor_shape.unknown_rank and i.tensor_shape.dim and i.tensor_shape.dim[0].size == -1
        for i in infos
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
