"""Client for TF Serving's gRPC API (the real ``tensorflow/serving`` or medflow's embedded server).

DICOM files go through the same preprocessing as ingestion (:mod:`components.dicom.pixels`),
are sent as PredictRequests of TF Serving's own protos (Predict with each tensor copied once,
:mod:`serving.wire`; the other calls through the official stubs), and come back with the model
name and version that answered: class probabilities for a classification model
(:class:`ImagePrediction`), or, for a segmentation model, per-pixel probabilities mapped back
onto the source image grid with a mask and its area (:class:`MaskPrediction`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np

from medflow.serving.errors import PredictionError, ServingConfigError

if TYPE_CHECKING:
    from medflow.core.pixel_spec import PixelSpec

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
# Foreground threshold of binary segmentation (the exported ``mask`` output uses the same:
# components.models.seg_export.THRESHOLD).
MASK_THRESHOLD = 0.5


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
class ImagePrediction(FramePrediction):
    """A classification result for one frame of one DICOM file (original UIDs)."""

    probabilities: list[float]
    class_id: int
    score: float

    task = "classification"

    @property
    def label(self) -> str:
        return (
            self.labels[self.class_id]
            if 0 <= self.class_id < len(self.labels)
            else str(self.class_id)
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


@dataclass(frozen=True, eq=False)
class MaskPrediction(FramePrediction):
    """A segmentation result for one frame of one DICOM file, on the source image grid.

    Attributes:
        labels: class names; index = the class index in ``mask`` (0 = background).
        mask: uint8 [rows, cols] of the source image: 0/1 for a binary model (probability
            >= 0.5), class indices (argmax) for a multi-class one.
        probabilities: float32 on the same grid: [rows, cols] foreground probability of a
            binary model, [rows, cols, n_classes] of a multi-class one (bilinear resampling
            of the model's output, with the preprocessing's padding cut off).
        pixel_spacing: (row, col) mm of the source pixels, None when the file has none.
        foreground_pixels: pixels with a non-zero class.
        area_mm2: their area (foreground_pixels x row spacing x col spacing), None
            without a pixel spacing.
        mean_probability: mean probability of the predicted class over the foreground
            pixels (0.0 when nothing was found).
        mask_ref: where the mask was saved (set by ``medflow predict --record``).
    """

    mask: np.ndarray
    probabilities: np.ndarray
    pixel_spacing: tuple[float, float] | None
    foreground_pixels: int
    area_mm2: float | None
    mean_probability: float
    mask_ref: str | None = None

    task = "segmentation"

    @property
    def scores(self) -> list[float]:
        """One presence score per label (for the review queue): for class k >= 1 the mean
        probability of k over the pixels predicted as k, or its highest probability when no
        pixel is; for the background 1 - the highest of those. A binary model's scores are
        ``[1 - s, s]`` with ``s >= 0.5`` exactly when the mask is not empty."""
        probs = self.probabilities
        if probs.ndim == 2:
            probs = np.stack([1.0 - probs, probs], axis=-1)
        present = []
        for k in range(1, probs.shape[-1]):
            region = self.mask == k
            p = probs[..., k]
            present.append(float(p[region].mean()) if region.any() else float(p.max()))
        return [1.0 - max(present, default=0.0), *present]

    @property
    def class_id(self) -> int:
        scores = self.scores
        return max(range(len(scores)), key=scores.__getitem__)

    @property
    def label(self) -> str:
        return (
            self.labels[self.class_id] if self.class_id < len(self.labels) else str(self.class_id)
        )

    def class_areas(self) -> dict[str, dict]:
        """{label: {"pixels", "area_mm2"}} of every non-background class."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.labels))
        px_mm2 = self.pixel_spacing[0] * self.pixel_spacing[1] if self.pixel_spacing else None
        return {
            self.labels[k]: {
                "pixels": int(counts[k]),
                "area_mm2": None if px_mm2 is None else float(counts[k] * px_mm2),
            }
            for k in range(1, len(self.labels))
        }

    def to_dict(self) -> dict:
        """The JSON summary (no arrays): UIDs, model, areas, scores, ``mask_ref``."""
        return {
            "task": self.task,
            "path": self.path,
            "frame_index": self.frame_index,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "labels": self.labels,
            "rows": int(self.mask.shape[0]),
            "columns": int(self.mask.shape[1]),
            "pixel_spacing": list(self.pixel_spacing) if self.pixel_spacing else None,
            "foreground_pixels": self.foreground_pixels,
            "area_mm2": self.area_mm2,
            "mean_probability": self.mean_probability,
            "classes": self.class_areas(),
            "label": self.label,
            "scores": self.scores,
            "mask_ref": self.mask_ref,
        }


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know about a served model."""

    spec: PixelSpec
    labels: list[str]
    task: str  # "classification" or "segmentation"


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

        from medflow.serving.tensors import parse_with_tensors, serialize_with_tensors

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
    ) -> tuple[list[ImagePrediction] | list[MaskPrediction], list[Rejected]]:
        """Predict DICOM files (or folders of them) with the model's ``serving_default``.

        A classification model gives :class:`ImagePrediction` items; a segmentation model
        (contract ``task``, or per-pixel ``probabilities``) gives :class:`MaskPrediction`
        items on each source image's grid.
        """
        from medflow.serving.dicom_input import load_inputs

        info = self.model_info(model, version=version, label=label, contract=contract)
        segmentation = info.task == "segmentation"
        inputs, rejected = load_inputs(dicom_files(paths), info.spec)
        results: list = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            batch = np.stack([item.array for item in chunk]).astype(np.float32)
            pred = self.predict(
                model,
                {"image": batch},
                version=version,
                label=label,
                output_filter=("probabilities",) if segmentation else (),
            )
            if segmentation:
                results += _mask_predictions(chunk, pred, info)
            else:
                results += _image_predictions(chunk, pred, info.labels)
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
        signature: ``probabilities`` [-1, n_classes] is classification, [-1, rows, cols]
        (foreground probability) or [-1, rows, cols, n_classes] on the input grid is
        segmentation."""
        from medflow.core.pixel_spec import PixelSpec

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
        out = [d.size for d in sig.outputs["probabilities"].tensor_shape.dim]
        if len(out) == 2:
            task, n_classes = "classification", out[-1]
        elif len(out) in (3, 4) and out[1:3] == dims[1:3]:
            task, n_classes = "segmentation", (2 if len(out) == 3 else out[3])
        else:
            raise PredictionError(
                f"model {model}: 'probabilities' shape {out} is neither [-1, classes] nor "
                f"per-pixel on the input grid {dims[1:3]}"
            )
        default_labels = (
            ["background", "foreground"]
            if task == "segmentation" and n_classes == 2
            else [f"class_{i}" for i in range(n_classes)]
        )
        if contract is None:
            return ModelInfo(
                PixelSpec(size=(dims[1], dims[2]), channels=dims[3]), default_labels, task
            )
        doc = read_contract(contract)
        if doc.get("task", task) != task:
            raise ServingConfigError(
                f"contract {contract}: task {doc.get('task')!r} but the served model's "
                f"probabilities {out} are {task} outputs; pass the contract of the served model"
            )
        spec = PixelSpec.from_dict(doc.get("preprocessing") or {})
        if spec.size is not None and (tuple(spec.size), spec.channels) != (
            tuple(dims[1:3]),
            dims[3],
        ):
            raise ServingConfigError(
                f"contract {contract}: preprocessing size {list(spec.size)}x{spec.channels} does not match "
                f"the served model's input {dims[1:]}; pass the contract of the served version"
            )
        labels = list(doc.get("labels") or default_labels)
        if task == "segmentation" and len(labels) != n_classes:
            raise ServingConfigError(
                f"contract {contract}: labels {labels} but the served model segments "
                f"{n_classes} classes (background first)"
            )
        return ModelInfo(spec, labels, task)


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
    from medflow.core.errors import InputError

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


def _origin(item, pred: Prediction) -> dict:
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


def _image_predictions(chunk, pred: Prediction, labels: list[str]) -> list[ImagePrediction]:
    probs = pred.outputs["probabilities"]
    class_ids = pred.outputs.get("class_id", probs.argmax(axis=1))
    scores = pred.outputs.get("score", probs.max(axis=1))
    return [
        ImagePrediction(
            **_origin(item, pred),
            labels=labels,
            probabilities=[float(p) for p in probs[i]],
            class_id=int(class_ids[i]),
            score=float(scores[i]),
        )
        for i, item in enumerate(chunk)
    ]


def to_source_grid(
    values: np.ndarray,
    rows: int,
    cols: int,
    spacing: tuple[float, float] | None,
    size: tuple[int, int] | None,
) -> np.ndarray:
    """Per-pixel model output ``[r, c]`` or ``[r, c, k]`` (model-input grid) -> the source
    image's ``rows x cols`` grid: the preprocessing's padding is cut off and the rest is
    resized back (bilinear), the inverse of :func:`components.dicom.pixels.to_model_input`'s
    aspect-keeping resample."""
    from PIL import Image

    top, left, height, width = _content_box(rows, cols, spacing, tuple(size) if size else None)
    values = np.asarray(values, dtype=np.float32)
    squeeze = values.ndim == 2
    if squeeze:
        values = values[..., None]
    crop = values[top : top + height, left : left + width]
    if crop.shape[:2] == (rows, cols):
        out = np.ascontiguousarray(crop)
    else:
        out = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(crop[..., k]), mode="F").resize(
                        (cols, rows), Image.BILINEAR
                    )
                )
                for k in range(crop.shape[-1])
            ],
            axis=-1,
        )
    return out[..., 0] if squeeze else out


@functools.lru_cache(maxsize=64)
def _content_box(
    rows: int, cols: int, spacing: tuple[float, float] | None, size: tuple[int, int] | None
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image inside the model input: where ingestion's own
    mask resampling puts an all-ones mask (so the two can never disagree)."""
    from medflow.components.dicom.pixels import resample_mask

    if size is None:
        return 0, 0, rows, cols
    inside = resample_mask(np.ones((rows, cols), np.uint8), size, spacing) > 0
    r = np.flatnonzero(inside.any(axis=1))
    c = np.flatnonzero(inside.any(axis=0))
    return int(r[0]), int(c[0]), int(r[-1] - r[0] + 1), int(c[-1] - c[0] + 1)


def _mask_predictions(chunk, pred: Prediction, info: ModelInfo) -> list[MaskPrediction]:
    probs = pred.outputs["probabilities"]
    out = []
    for i, item in enumerate(chunk):
        geometry = item.geometry
        spacing = item.source_spacing
        grid = to_source_grid(
            probs[i], geometry.orig_rows, geometry.orig_cols, spacing, info.spec.size
        )
        if grid.ndim == 2:
            mask = (grid >= MASK_THRESHOLD).astype(np.uint8)
            chosen = grid
        else:
            mask = grid.argmax(axis=-1).astype(np.uint8)
            chosen = np.take_along_axis(grid, mask[..., None].astype(np.intp), axis=-1)[..., 0]
        foreground = mask > 0
        n = int(foreground.sum())
        out.append(
            MaskPrediction(
                **_origin(item, pred),
                labels=info.labels,
                mask=mask,
                probabilities=grid,
                pixel_spacing=spacing,
                foreground_pixels=n,
                area_mm2=None if spacing is None else float(n * spacing[0] * spacing[1]),
                mean_probability=float(chosen[foreground].mean()) if n else 0.0,
            )
        )
    return out
