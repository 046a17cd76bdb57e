"""Errors of the serving layer.

:class:`ServingStatus` is what request handlers raise: a gRPC status code plus a message, the
same pair TF Serving answers with. The gRPC service turns it into the RPC status, the REST app
into an HTTP status and TF Serving's ``{"error": "..."}`` body.
"""

from __future__ import annotations

import grpc

from medflow.core.errors import ConfigError, ServiceError

# TF Serving's mapping of canonical codes to HTTP (model_servers/http_rest_api_util.cc).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingStatus(Exception):
    """A request failed with a canonical status code (what TF Serving would answer)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)


def status_code(number: int) -> grpc.StatusCode:
    """The gRPC status code of a canonical error code number (TensorFlow's ``error_code``)."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def not_found(message: str) -> ServingStatus:
    return ServingStatus(grpc.StatusCode.NOT_FOUND, message)


def invalid(message: str) -> ServingStatus:
    return ServingStatus(grpc.StatusCode.INVALID_ARGUMENT, message)


def unavailable(message: str) -> ServingStatus:
    return ServingStatus(grpc.StatusCode.UNAVAILABLE, message)


class ServingConfigError(ConfigError):
    """A models.config / batching parameters file or serve flag that cannot be used."""


class PredictionError(ServiceError):
    """The prediction server refused a request or could not be reached."""
