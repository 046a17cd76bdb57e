"""TensorProto encoding: what the server answers and the client sends must read back in TF."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.serving.tensors import fill_tensor_proto, to_ndarray, to_tensor_proto

ARRAYS = [
    np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1),
    np.arange(6, dtype=">f4").reshape(2, 3),  # big-endian input is sent little-endian
    np.array([3, -1, 7], dtype=np.int64),
    np.array([[1, 0]], dtype=np.uint8),
    np.array([True, False]),
    np.float32(2.5),  # a scalar: shape []
    np.zeros((0, 3), dtype=np.float32),
    np.array([b"a", b"bc"], dtype=object),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(np.shape(a))}")
def test_tensorflow_reads_what_we_encode(array):
    import tensorflow as tf

    proto = to_tensor_proto(array)
    decoded = tf.make_ndarray(proto)  # TF's own decoder (what TF Serving runs on a request)
    assert decoded.shape == np.shape(array)
    np.testing.assert_array_equal(decoded, np.asarray(array))
    np.testing.assert_array_equal(to_ndarray(proto, "x"), np.asarray(array))


# tf.make_tensor_proto copies big-endian bytes as they are, so it is left out here.
@pytest.mark.parametrize(
    "array",
    [a for a in ARRAYS if np.asarray(a).dtype.byteorder != ">"],
    ids=lambda a: f"{a.dtype}{list(np.shape(a))}",
)
def test_we_read_what_tensorflow_encodes(array):
    import tensorflow as tf

    proto = tf.make_tensor_proto(np.asarray(array))
    np.testing.assert_array_equal(to_ndarray(proto, "x"), np.asarray(array))


def test_fill_in_place_matches_a_built_proto():
    from tensorflow_serving.apis import predict_pb2

    x = np.random.default_rng(0).normal(size=(4, 5, 5, 1)).astype(np.float32)
    request = predict_pb2.PredictRequest()
    fill_tensor_proto(request.inputs["image"], x)
    assert request.inputs["image"] == to_tensor_proto(x)
    assert request.inputs["image"].tensor_content == x.tobytes()


def test_unsupported_dtype_is_refused():
    with pytest.raises(TypeError, match="complex64"):
        to_tensor_proto(np.zeros(2, dtype=np.complex64))
