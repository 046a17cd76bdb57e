"""TensorFlow's profiler service on the model server's gRPC port (``--enable_profiler``).

TF Serving answers ``tensorflow.ProfilerService`` (what TensorBoard's profile plugin and
``tf.profiler.experimental.client.trace`` call) on its gRPC port. TensorFlow's own profiler
server (``tf.profiler.experimental.server.start``) records this process's TensorFlow activity
but listens on a port of its own, so it is started with the model server on a free port
and the service's calls are relayed to it byte for byte over loopback. That port listens on
every interface, as TensorFlow's profiler server always does.
"""

from __future__ import annotations

import functools
import socket

import grpc

SERVICE_PREFIX = "/tensorflow.ProfilerService/"


@functools.lru_cache(maxsize=1)
def _profiler_channel() -> grpc.Channel:
    import tensorflow as tf

    with socket.socket() as s:  # a free port for TensorFlow's profiler server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tf.profiler.experimental.server.start(port)
    return grpc.insecure_channel(f"127.0.0.1:{port}")


class _Relay(grpc.GenericRpcHandler):
    def service(self, handler_call_details):
        method = handler_call_details.method
        if not method.startswith(SERVICE_PREFIX):
            return None

        def relay(raw: bytes, context) -> bytes:
            remaining = context.time_remaining()
            call = _profiler_channel().unary_unary(method)
            try:
                # wait_for_ready: a trace asked for while the profiler server still starts
                # waits for it (within the caller's deadline) instead of failing
                return call(raw, timeout=remaining, wait_for_ready=True)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())

        return grpc.unary_unary_rpc_method_handler(relay)


def profiler_handler() -> grpc.GenericRpcHandler:
    """The generic handler that answers ProfilerService calls; TensorFlow's profiler server
    is started now, without waiting for it (the model server's start never depends on it)."""
    _profiler_channel()
    return _Relay()


def traceme(name: str):
    """A TensorFlow profiler trace event around a block (``TraceMe``; about 0.4 µs when no
    profile is being taken): the server's requests and model polls show in a profile, as TF
    Serving's own work does in its traces."""
    from tensorflow.python.profiler.trace import Trace

    return Trace(name)
