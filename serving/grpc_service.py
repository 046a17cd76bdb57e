"""gRPC PredictionService and ModelService on the official tensorflow-serving-api stubs."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from medflow.serving import inference
from medflow.serving.config import models_from_proto
from medflow.serving.errors import ServingConfigError, ServingStatus, invalid
from medflow.serving.manager import ModelManager
from medflow.serving.profiler import traceme
from medflow.serving.tensors import parse_split

log = logging.getLogger(__name__)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"


def _handle(manager: ModelManager, api: str, fn: Callable, request, context):
    """Run one RPC, map ServingStatus to the RPC status, record metrics; never crash."""
    started = time.perf_counter()
    status = "OK"
    try:
        with traceme(f"PredictionService::{api}"):
            return fn(manager, request)
    except ServingStatus as exc:
        status = exc.code.name
        context.abort(exc.code, exc.message)
    except Exception as exc:  # an unexpected failure is INTERNAL, and the server keeps going
        status = "INTERNAL"
        log.exception("%s failed", api)
        context.abort(grpc.StatusCode.INTERNAL, f"{api} failed: {exc}")
    finally:
        model = request.model_spec.name if hasattr(request, "model_spec") else ""
        manager.observe_request(
            model=model,
            api=api,
            entrypoint="GRPC",
            status=status,
            seconds=time.perf_counter() - started,
        )


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(self, manager: ModelManager) -> None:
        self._m = manager

    def Predict(self, request: _SplitRequest, context):  # noqa: N802 (gRPC method names)
        # Always decoded by _decode_predict_request: _predict_handler answers Predict.
        run = functools.partial(inference.predict, contents=request.contents)
        return _handle(self._m, "predict", run, request.message, context)

    def Classify(self, request, context):  # noqa: N802
        return _handle(self._m, "classify", inference.classify, request, context)

    def Regress(self, request, context):  # noqa: N802
        return _handle(self._m, "regress", inference.regress, request, context)

    def MultiInference(self, request, context):  # noqa: N802
        return _handle(self._m, "multi_inference", inference.multi_inference, request, context)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _handle(self._m, "get_model_metadata", inference.model_metadata, request, context)


class _SplitRequest:
    """A PredictRequest and the tensor_content bytes left in the received buffer
    (:func:`serving.tensors.parse_split`; none for small requests): large input tensors reach
    TensorFlow with one copy instead of three or four."""

    __slots__ = ("message", "contents")

    def __init__(self, message, contents: dict) -> None:
        self.message = message
        self.contents = contents


def _decode_predict_request(raw: bytes) -> _SplitRequest:
    return _SplitRequest(*parse_split(predict_pb2.PredictRequest, raw, "inputs"))


def _predict_handler(servicer: PredictionService) -> grpc.GenericRpcHandler:
    """Predict with the zero-copy request decoder; registered before the official handlers,
    so it answers Predict and they answer the other methods."""
    method = grpc.unary_unary_rpc_method_handler(
        servicer.Predict,
        request_deserializer=_decode_predict_request,
        response_serializer=None,  # inference.predict answers serialized bytes
    )
    return grpc.method_handlers_generic_handler(PREDICTION_SERVICE, {"Predict": method})


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager: ModelManager) -> None:
        self._m = manager

    def GetModelStatus(self, request, context):  # noqa: N802
        return _handle(self._m, "get_model_status", inference.model_status, request, context)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        return _handle(self._m, "handle_reload_config", _reload_config, request, context)


def _reload_config(manager: ModelManager, request):
    """Serve the models of the request's ModelServerConfig from now on (TF Serving's reload:
    models left out are unloaded)."""
    from tensorflow_serving.apis import model_management_pb2

    try:
        models = models_from_proto(request.config, source="ReloadConfigRequest", base_dir=Path())
    except ServingConfigError as exc:
        raise invalid(str(exc)) from exc
    manager.reconfigure(models)
    return model_management_pb2.ReloadConfigResponse()


def start_grpc_server(
    manager: ModelManager,
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    workers: int = 16,
    reuse_port: bool = False,
    channel_arguments: tuple[tuple[str, int | str], ...] = (),
    socket_path: str | None = None,
    profiler: bool = False,
) -> tuple[grpc.Server, int]:
    """Start the gRPC server; returns it and the bound port (``port`` 0 picks a free one).

    Messages larger than ``max_message_bytes`` are refused by gRPC with RESOURCE_EXHAUSTED.
    ``reuse_port``: let other processes bind the same port (``--workers``); otherwise a port in
    use is an error. ``channel_arguments``: more gRPC server arguments (TF Serving's
    ``--grpc_channel_arguments``); one named like a default above replaces it.
    ``socket_path``: serve on this UNIX socket too. ``profiler``: answer TensorFlow's
    ProfilerService (:mod:`serving.profiler`).
    """
    options = {
        "grpc.max_receive_message_length": max_message_bytes,
        "grpc.max_send_message_length": max_message_bytes,
        "grpc.so_reuseport": 1 if reuse_port else 0,
    }
    options.update(channel_arguments)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), options=list(options.items())
    )
    predictions = PredictionService(manager)
    server.add_generic_rpc_handlers((_predict_handler(predictions),))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predictions, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    if profiler:
        from medflow.serving.profiler import profiler_handler

        server.add_generic_rpc_handlers((profiler_handler(),))
    bound = _bind(server, f"{host}:{port}")
    if bound == 0:
        raise ServingConfigError(
            f"cannot bind gRPC port {host}:{port} (in use, or not an address of this machine); "
            "pick another --grpc-port"
        )
    if socket_path and not _bind(server, f"unix:{socket_path}"):
        raise ServingConfigError(
            f"cannot bind gRPC UNIX socket {socket_path}; pick another --grpc_socket_path"
        )
    server.start()
    return server, bound


def _bind(server: grpc.Server, address: str) -> int:
    try:  # grpcio raises (newer) or returns 0 (older) when the address cannot be bound
        return server.add_insecure_port(address)
    except RuntimeError:
        return 0
