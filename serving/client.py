"""Client for TF Serving's gRPC API (the real ``tensorflow/serving`` or medflow's embedded server).

DICOM files go through the same preprocessing as ingestion
(:mod:`medflow.components.dicom.pixels`), are sent as PredictRequests of TF Serving's own
protos (Predict with each tensor copied once, :mod:`medflow.serving.wire`; the other calls
through the official stubs), and come back with the model name and version that answered,
decoded by the model's task plug-in (:mod:`medflow.core.tasks`) into typed results, e.g.
class probabilities per image, or per-pixel probabilities mapped back onto the source image
grid with a mask and its area.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np

from medflow.core.contract import ModelContract
from medflow.core.errors import MedflowError
from medflow.core.pixel_spec import PixelSpec
from medflow.core.tasks import all_tasks, get_task
from medflow.serving.dicom_input import ModelInput, Rejected, dicom_files, load_inputs
from medflow.serving.errors import PredictionError, ServingConfigError
from medflow.serving.tensors import parse_with_tensors, serialize_with_tensors

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
# Looks at the preprocessed inputs before they are sent: (inputs to predict, refused files).
Screen = Callable[[list[ModelInput]], tuple[list[ModelInput], list[Rejected]]]
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


@dataclass(frozen=True)
class Prediction:
    """Outputs of one Predict call and who answered it."""

    model_name: str
    model_version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class FramePrediction:
    """What every per-image result names: which frame of which DICOM file (original UIDs),
    which model answered, and its class names. (No ``==`` here: a subclass holding arrays
    keeps identity equality.)"""

    path: str
    frame_index: int
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    model_name: str
    model_version: int
    labels: list[str]


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know about a served model."""

    spec: PixelSpec
    labels: list[str]
    task: str  # a task plug-in's name (medflow.core.tasks)


class PredictionClient:
    """PredictionService/ModelService client with deadlines and retries on UNAVAILABLE.

    Args:
        target: ``host:port`` of the gRPC endpoint (TF Serving's 8500).
        timeout_s: deadline of each RPC.
        retries: extra attempts when the server answers UNAVAILABLE (loading, restarting).
        backoff_s: first wait between attempts; doubles each time.
        max_message_bytes: gRPC send/receive limit (TF Serving accepts up to 2 GiB).
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        max_message_bytes: int = 256 * 2**20,
    ) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if ":" not in target:
            raise ServingConfigError(f"server {target!r} must be HOST:PORT, e.g. localhost:8500")
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        backoff_ms = max(50, int(backoff_s * 1000))
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # gRPC's own reconnect backoff (1 s, growing) would outlast our retries while a
            # server restarts; align it with them so a retry finds a fresh connection attempt.
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.min_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", max(1000, backoff_ms * 2**retries)),
            # A connection of its own: gRPC otherwise shares one among all channels to the
            # same target in a process, and both `medflow serve --workers` (SO_REUSEPORT) and
            # a Kubernetes Service spread load per connection, so clients in threads of one
            # process would all reach one worker or one replica.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._channel = grpc.insecure_channel(target, options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        # Predict itself goes over the stub's method with the message encoded here: the same
        # bytes protobuf would write, with each tensor copied once (serving.wire); answers are
        # read the same way, as views of the received buffer.
        self._predict_bytes = self._channel.unary_unary(PREDICT_METHOD)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, what: str):
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout_s)
            except grpc.RpcError as exc:
                code = exc.code()
                if code in RETRYABLE and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                hint = (
                    " (is the server running? check --server HOST:PORT)"
                    if code in RETRYABLE
                    else ""
                )
                raise PredictionError(
                    f"{what} on {self.target} failed with {code.name}: {exc.details()}{hint}"
                ) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _spec(
        spec, model: str, version: int | None, label: str | None, signature: str = ""
    ) -> None:
        spec.name = model
        if version is not None:
            spec.version.value = version
        if label:
            spec.version_label = label
        spec.signature_name = signature

    def predict(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = "serving_default",
        output_filter: Sequence[str] = (),
    ) -> Prediction:
        """One PredictRequest with ``inputs``; returns the outputs and the answering version."""
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        self._spec(request.model_spec, model, version, label, signature)
        raw = serialize_with_tensors(request, "inputs", inputs)
        answer = self._call(self._predict_bytes, raw, f"Predict({model})")
        try:
            response, outputs = parse_with_tensors(predict_pb2.PredictResponse, answer, "outputs")
        except Exception as exc:  # DecodeError, or an answer whose tensors do not add up
            raise PredictionError(
                f"Predict({model}) on {self.target} sent an answer that is not a readable "
                f"PredictResponse: {exc}"
            ) from exc
        return Prediction(
            model_name=response.model_spec.name,
            model_version=response.model_spec.version.value,
            signature_name=response.model_spec.signature_name,
            outputs=outputs,
        )

    def signature_defs(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> dict:
        """GetModelMetadata: {signature name: SignatureDef}."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version, label)
        response = self._call(self._predict.GetModelMetadata, request, f"GetModelMetadata({model})")
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return dict(sig_map.signature_def)

    def status(self, model: str) -> list[tuple[int, str]]:
        """GetModelStatus: [(version, state name)], newest first."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        response = self._call(self._models.GetModelStatus, request, f"GetModelStatus({model})")
        names = get_model_status_pb2.ModelVersionStatus.State.Name
        return [(s.version, names(s.state)) for s in response.model_version_status]

    def predict_dicom(
        self,
        paths: Iterable[str | Path],
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        contract: str | Path | None = None,
        batch_size: int = 32,
        screen: Screen | None = None,
        signature: str = "serving_default",
    ) -> tuple[list, list[Rejected]]:
        """Predict DICOM files (or folders of them) with the model's ``serving_default`` (or
        ``signature``, one with the same input and more outputs, e.g. ``explain``).

        The results are those of the model's task plug-in (the contract's ``task``, or the
        task whose outputs the served signature has), e.g. class probabilities per image, or
        a mask per image on the source image's grid. ``screen`` sees the preprocessed inputs
        first and returns those to predict and those it refuses.
        """
        info = self.model_info(model, version=version, label=label, contract=contract)
        task = get_task(info.task)
        inputs, rejected = load_inputs(dicom_files(paths), info.spec)
        if screen is not None:
            inputs, refused = screen(inputs)
            rejected = [*rejected, *refused]
        results: list = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            batch = np.stack([item.array for item in chunk]).astype(np.float32)
            pred = self.predict(
                model,
                {"image": batch},
                version=version,
                label=label,
                signature=signature,
                output_filter=task.output_filter,
            )
            results += task.decode(chunk, pred, named_classes(info, pred))
        return results, rejected

    def preprocessing(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        contract: str | Path | None = None,
    ):
        """(PixelSpec, labels) from the model contract, else from the served signature's shape."""
        info = self.model_info(model, version=version, label=label, contract=contract)
        return info.spec, info.labels

    def model_info(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        contract: str | Path | None = None,
    ) -> ModelInfo:
        """Preprocessing, labels and task from the model contract, else from the served
        signature: the task plug-in whose outputs a ``probabilities`` of that shape are
        (e.g. [-1, classes], or per-pixel on the input grid)."""
        sig = self.signature_defs(model, version=version, label=label).get("serving_default")
        if sig is None or "image" not in sig.inputs:
            raise PredictionError(
                f"model {model} has no serving_default signature with an 'image' input"
            )
        dims = [d.size for d in sig.inputs["image"].tensor_shape.dim]
        if len(dims) != 4 or min(dims[1:]) < 1:
            raise PredictionError(
                f"model {model}: 'image' input shape {dims} is not [-1, rows, cols, channels]"
            )
        task, n_classes = _task_of_outputs(model, dims, sig.outputs)
        if contract is None:
            return ModelInfo(
                PixelSpec(size=(dims[1], dims[2]), channels=dims[3]),
                task.default_labels(n_classes),
                task.name,
            )
        doc = read_contract(contract)
        if doc.task != task.name:
            raise ServingConfigError(
                f"contract {contract}: task {doc.task!r} but the served model's "
                f"outputs are {task.name} outputs; pass the contract of the served "
                "model"
            )
        spec = doc.pixel_spec
        if spec.size is not None and (tuple(spec.size), spec.channels) != (
            tuple(dims[1:3]),
            dims[3],
        ):
            raise ServingConfigError(
                f"contract {contract}: preprocessing size {list(spec.size)}x{spec.channels} "
                f"does not match the served model's input {dims[1:]}; pass the contract of the "
                "served version"
            )
        labels = list(doc.labels or task.default_labels(n_classes))
        problem = task.check_labels(labels, n_classes)
        if problem:
            raise ServingConfigError(f"contract {contract}: {problem}")
        return ModelInfo(spec, labels, task.name)


def _task_of_outputs(model: str, image_dims: list[int], outputs):
    """(task plug-in, number of classes) whose outputs the served ``outputs`` are: a task is
    recognised by the shape of its ``signature_output`` (default ``probabilities``)."""
    shapes = {k: [d.size for d in v.tensor_shape.dim] for k, v in outputs.items()}
    for task in all_tasks():
        out = shapes.get(getattr(task, "signature_output", "probabilities"))
        n_classes = None if out is None else task.classes_from_signature(image_dims, out)
        if n_classes is not None:
            return task, n_classes
    raise PredictionError(
        f"model {model}: serving_default outputs {shapes} are the outputs of no installed task "
        f"(for an 'image' input {image_dims}); pass a model served by medflow's pipeline"
    )


# A string output [batch, n_classes] holding the class names in output order, as TF Serving's
# Classify API (ClassificationResult.classes) and the Estimator heads return them.
CLASS_NAMES_OUTPUT = "classes"


def class_names(outputs: dict[str, np.ndarray]) -> list[str] | None:
    """The class names a model answered with (its ``classes`` string output), if any."""
    names = outputs.get(CLASS_NAMES_OUTPUT)
    if names is None or names.dtype != object or names.ndim != 2 or not len(names):
        return None
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names[0]]


def named_classes(info: ModelInfo, pred: Prediction) -> ModelInfo:
    """``info`` with the class names the model itself answered with, when it names them
    (the model's own names win over a contract's or the task's defaults)."""
    names = class_names(pred.outputs)
    if not names or names == list(info.labels):
        return info
    return replace(info, labels=names)


def read_contract(path: str | Path) -> ModelContract:
    """A model contract (contract.json, or a version folder holding one; older contract
    versions are migrated)."""
    try:
        return ModelContract.load(path)
    except MedflowError as exc:
        raise ServingConfigError(str(exc)) from None


def origin(item, pred: Prediction) -> dict:
    """The fields every per-image result has: which frame of which file, which model."""
    return dict(
        path=item.path,
        frame_index=item.frame_index,
        sop_instance_uid=item.sop_instance_uid,
        study_instance_uid=item.study_instance_uid,
        series_instance_uid=item.series_instance_uid,
        model_name=pred.model_name,
        model_version=pred.model_version,
    )
