"""One loaded model version: its SavedModel, SignatureDefs and (optional) batch schedulers."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medflow.serving.batching import BatchScheduler
from medflow.serving.config import BatchingConfig
from medflow.serving.errors import ServingStatus, invalid, status_code
from medflow.serving.tensors import check_inputs
from medflow.serving.tf1_session import SessionRunner, is_tf1_saved_model

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class LoadOptions:
    """How versions are loaded (TF Serving's flags of the same meaning).

    Attributes:
        prefer_tflite: serve ``model.tflite`` where a version has one (``--prefer_tflite_model``).
        check_method_name: Classify/Regress refuse a signature whose method_name is not theirs
            (``--enable_signature_method_name_check``; off by default, as in TF Serving).
        warmup: replay ``assets.extra/tf_serving_warmup_requests`` before a version is served
            (``--enable_model_warmup``).
        warmup_iterations: times each warm-up request is replayed
            (``--num_request_iterations_for_warmup``).
    """

    prefer_tflite: bool = False
    check_method_name: bool = False
    warmup: bool = True
    warmup_iterations: int = 1


def load_version(name: str, version: int, path: Path, loading: LoadOptions, **kwargs):
    """Load one version folder (SavedModel, or TFLite where preferred) and warm it up."""
    if loading.prefer_tflite and (path / "model.tflite").is_file():
        from medflow.serving.tflite import TfLiteVersion

        loaded = TfLiteVersion(name, version, path)
    else:
        loaded = LoadedVersion(name, version, path, **kwargs)
    if loading.warmup:
        from medflow.serving.warmup import replay_warmup

        try:
            replay_warmup(loaded, loading)
        except BaseException:
            loaded.close()
            raise
    return loaded


def read_meta_graph(version_dir: Path):
    """The serving MetaGraph of saved_model.pb (the one tagged 'serve', or the only one)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    for graph in saved.meta_graphs:
        if "serve" in graph.meta_info_def.tags or len(saved.meta_graphs) == 1:
            return graph
    raise ValueError(f"{version_dir}: no MetaGraph tagged 'serve'")


def read_signature_defs(version_dir: Path) -> dict:
    """SignatureDefs of the serving MetaGraph, read from saved_model.pb (what TF Serving reports)."""
    return _signature_defs(read_meta_graph(version_dir))


def _signature_defs(graph) -> dict:
    return {k: v for k, v in graph.signature_def.items() if not k.startswith("__")}


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
        meta_graph = read_meta_graph(path)
        self.signature_defs = _signature_defs(meta_graph)
        self._session = None
        self._functions: dict = {}
        if is_tf1_saved_model(meta_graph):  # run in a Session, as TF Serving runs it
            self._session = SessionRunner(path, self.signature_defs)
        else:
            self._model = tf.saved_model.load(str(path), tags=["serve"])
            self._functions = dict(self._model.signatures)
        # Each signature's input names in the order of its function's flat arguments.
        self._arg_order = {
            key: [spec.name for spec in tf.nest.flatten(fn.structured_input_signature)]
            for key, fn in self._functions.items()
        }
        self._batching = batching
        self._on_batch = on_batch
        self._schedulers: dict[str, BatchScheduler] = {}
        self._lock = threading.Lock()
        self._closed = False

    def signature(self, signature_name: str):
        """(name, SignatureDef) for a request's signature name ("" = serving_default)."""
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.signature_defs or (self._session is None and key not in self._functions):
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

        if self._session is not None:
            try:
                return self._session(key, inputs)
            except tf.errors.OpError as exc:
                raise ServingStatus(status_code(exc.error_code), _first_line(exc)) from exc
        fn = self._functions[key]
        try:
            # The flat call leaves shapes to the graph (as TF Serving's Session::Run does);
            # calling fn(**inputs) would refuse any shape but the one it was traced with.
            order = self._arg_order[key]
            if sorted(order) == sorted(inputs) and hasattr(fn, "_call_flat"):
                args = [tf.constant(inputs[name]) for name in order]
                result = fn._call_flat(args, fn.captured_inputs)
            else:
                result = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.OpError as exc:  # TensorFlow's own status, as TF Serving answers it
            raise ServingStatus(status_code(exc.error_code), _first_line(exc)) from exc
        except (ValueError, TypeError) as exc:
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
        # A TF1 Session is closed by its finalizer too, once the requests still holding
        # this version let go (closing it here would fail them).


def _batchable(sig) -> bool:
    """True when every input and output has a variable leading (batch) dimension."""
    infos = list(sig.inputs.values()) + list(sig.outputs.values())
    return bool(infos) and all(
        not i.tensor_shape.unknown_rank and i.tensor_shape.dim and i.tensor_shape.dim[0].size == -1
        for i in infos
    )


def _first_line(exc: Exception) -> str:
    """The line that says what went wrong. TensorFlow's eager errors start with "Graph
    execution error:" and the node's Python traceback; the op's own message (what TF
    Serving's Session::Run answers) is the last paragraph."""
    text = (getattr(exc, "message", None) or str(exc)).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    skip = ("Graph execution error", "Detected at node", "<stack traces unavailable>")
    for line in lines:
        if not line[0].isspace() and not line.startswith(skip):
            return line
    return lines[0] if lines else type(exc).__name__
