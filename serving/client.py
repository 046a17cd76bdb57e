"""Client for TF Serving's gRPC API (the real ``tensorflow/serving`` or medflow's embedded server).

DICOM files go through the same preprocessing as ingestion (:mod:`components.dicom.pixels`),
are sent as PredictRequests with the official stubs, and come back with the model name and
version that answered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np

from serving.errors import PredictionError, ServingConfigError

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


@dataclass(frozen=True)
class Prediction:
    """Outputs of one Predict call and who answered it."""

    model_name: str
    model_version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class ImagePrediction:
    """A classification result for one frame of one DICOM file (original UIDs)."""

    path: str
    frame_index: int
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    model_name: str
    model_version: int
    labels: list[str]
    probabilities: list[float]
    class_id: int
    score: float

    @property
    def label(self) -> str:
        return (
            self.labels[self.class_id]
            if 0 <= self.class_id < len(self.labels)
            else str(self.class_id)
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


@dataclass(frozen=True)
class Rejected:
    """A file that could not be turned into model input."""

    path: str
    reason: str
    message: str


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
        ]
        self._channel = grpc.insecure_channel(target, options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

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

        from serving.tensors import to_ndarray, to_tensor_proto

        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        self._spec(request.model_spec, model, version, label, signature)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(to_tensor_proto(np.asarray(value)))
        response = self._call(self._predict.Predict, request, f"Predict({model})")
        return Prediction(
            model_name=response.model_spec.name,
            model_version=response.model_spec.version.value,
            signature_name=response.model_spec.signature_name,
            outputs={k: to_ndarray(v, k) for k, v in response.outputs.items()},
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
    ) -> tuple[list[ImagePrediction], list[Rejected]]:
        """Classify DICOM files (or folders of them) with the model's ``serving_default``."""
        from serving.dicom_input import load_inputs

        spec, labels = self.preprocessing(model, version=version, label=label, contract=contract)
        inputs, rejected = load_inputs(dicom_files(paths), spec)
        results: list[ImagePrediction] = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            batch = np.stack([item.array for item in chunk]).astype(np.float32)
            pred = self.predict(model, {"image": batch}, version=version, label=label)
            results += _image_predictions(chunk, pred, labels)
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
        from components.dicom.pixels import PixelSpec

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
        if "probabilities" not in sig.outputs:
            raise PredictionError(f"model {model}: serving_default has no 'probabilities' output")
        n_classes = sig.outputs["probabilities"].tensor_shape.dim[-1].size
        if contract is None:
            return PixelSpec(size=(dims[1], dims[2]), channels=dims[3]), [
                f"class_{i}" for i in range(n_classes)
            ]
        doc = read_contract(contract)
        spec = PixelSpec.from_dict(doc.get("preprocessing") or {})
        if spec.size is not None and (tuple(spec.size), spec.channels) != (
            tuple(dims[1:3]),
            dims[3],
        ):
            raise ServingConfigError(
                f"contract {contract}: preprocessing size {list(spec.size)}x{spec.channels} does not match "
                f"the served model's input {dims[1:]}; pass the contract of the served version"
            )
        return spec, list(doc.get("labels") or [f"class_{i}" for i in range(n_classes)])


def read_contract(path: str | Path) -> dict:
    """A model contract (contract.json, or a version folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "contract.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ServingConfigError(
            f"model contract {path} not found; pass --contract <version dir>/contract.json"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ServingConfigError(f"model contract {path} is not valid JSON: {exc}") from exc


def dicom_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files given directly, plus every non-hidden file under given folders (sorted)."""
    from medflow.errors import InputError

    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path} does not exist; pass DICOM files or folders")
    return files


def _image_predictions(chunk, pred: Prediction, labels: list[str]) -> list[ImagePrediction]:
    probs = pred.outputs["probabilities"]
    class_ids = pred.outputs.get("class_id", probs.argmax(axis=1))
    scores = pred.outputs.get("score", probs.max(axis=1))
    return [
        ImagePrediction(
            path=item.path,
            frame_index=item.frame_index,
            sop_instance_uid=item.sop_instance_uid,
            study_instance_uid=item.study_instance_uid,
            series_instance_uid=item.series_instance_uid,
            model_name=pred.model_name,
            model_version=pred.model_version,
            labels=labels,
            probabilities=[float(p) for p in probs[i]],
            class_id=int(class_ids[i]),
            score=float(scores[i]),
        )
        for i, item in enumerate(chunk)
    ]
