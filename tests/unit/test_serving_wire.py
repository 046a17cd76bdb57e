"""medflow.serving.wire: tensor_content split off a serialized message without copies, and back."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2

from medflow.serving.tensors import (
    fill_tensor_proto,
    parse_with_tensors,
    serialize_with_tensors,
    to_ndarray,
)
from medflow.serving.wire import split_tensor_contents, varint_bytes

INPUTS = 2  # PredictRequest.inputs
OUTPUTS = 1  # PredictResponse.outputs


def _request(**inputs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    request.model_spec.version.value = 3
    request.output_filter.append("probabilities")
    for name, value in inputs.items():
        fill_tensor_proto(request.inputs[name], value)
    return request


def _rejoin(message: bytes, contents: dict, cls=predict_pb2.PredictRequest, field="inputs"):
    parsed = cls.FromString(message)
    for key, view in contents.items():
        getattr(parsed, field)[key].tensor_content = bytes(view)
    return parsed


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_split_gives_the_same_request_and_views_into_the_received_buffer():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 30, 30, 1)).astype(np.float32)  # > 127 bytes: 2-byte lengths
    mask = rng.integers(0, 2, (4, 30, 30)).astype(np.uint8)
    request = _request(image=image, mask=mask, note=np.array([b"a", b"bc"], dtype=object))
    request.inputs["scalar"].dtype = 1
    request.inputs["scalar"].float_val.append(2.5)  # values outside tensor_content stay put
    raw = request.SerializeToString()

    message, contents = split_tensor_contents(raw, INPUTS)

    assert sorted(contents) == ["image", "mask"]
    assert len(message) < 200 < len(raw) - image.nbytes  # only the small fields were copied
    assert _rejoin(message, contents) == request
    parsed = predict_pb2.PredictRequest.FromString(message)
    got = to_ndarray(parsed.inputs["image"], "image", contents["image"])
    np.testing.assert_array_equal(got, image)
    start = _address(np.frombuffer(raw, np.uint8))
    assert start <= _address(got) < start + len(raw)  # a view, not a copy
    np.testing.assert_array_equal(to_ndarray(parsed.inputs["mask"], "mask", contents["mask"]), mask)
    assert to_ndarray(parsed.inputs["scalar"], "scalar").tolist() == 2.5  # rank 0


@pytest.mark.parametrize("key", ["", "é-ünïcode", "k" * 200])
def test_split_handles_empty_long_and_unicode_keys(key):
    request = _request(**{"x": np.arange(3, dtype=np.int64)})
    fill_tensor_proto(request.inputs[key], np.ones((2, 2), np.float16))
    message, contents = split_tensor_contents(request.SerializeToString(), INPUTS)
    assert set(contents) == {"x", key}
    assert _rejoin(message, contents) == request


def test_split_leaves_tensors_without_content_whole():
    request = _request()
    request.inputs["empty"].dtype = 1  # no values at all
    message, contents = split_tensor_contents(request.SerializeToString(), INPUTS)
    assert contents == {}
    assert predict_pb2.PredictRequest.FromString(message) == request


def _entry(key: bytes, value: bytes) -> bytes:
    body = b"\x0a" + varint_bytes(len(key)) + key + b"\x12" + varint_bytes(len(value)) + value
    return b"\x12" + varint_bytes(len(body)) + body


@pytest.mark.parametrize(
    "raw",
    [
        # the same key twice: protobuf keeps the last entry
        _entry(b"x", b"\x22\x04abcd") + _entry(b"x", b"\x22\x04efgh"),
        # two tensor_content fields in one TensorProto: the last one wins
        _entry(b"x", b"\x22\x02ab\x22\x02cd"),
        # a TensorProto sent in two parts, which protobuf merges
        b"\x12\x0f" + b"\x0a\x01x" + b"\x12\x02\x08\x01" + b"\x12\x06\x22\x04abcd",
        b"\x12\x05\x0a\x01x",  # truncated
        b"\x13\x14",  # a group, which proto3 never writes
        b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # an overlong varint
        _entry(b"\xff\xfe", b"\x22\x04abcd"),  # a key that is not UTF-8
    ],
)
def test_split_declines_what_protobuf_itself_should_decide(raw):
    assert split_tensor_contents(raw, INPUTS) is None


def test_serialize_with_tensors_is_what_protobuf_would_write():
    rng = np.random.default_rng(1)
    outputs = {
        "probabilities": rng.random((32, 2), np.float32),
        "mask": rng.random((2, 70, 70))[:, ::2],  # not contiguous
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "scalar": np.array(1.5, np.float16),
        "flags": np.array([True, False]),
        "empty": np.zeros((0, 4), np.float32),
        "names": np.array([b"a", b"b"], dtype=object),
    }
    expected = predict_pb2.PredictResponse()
    expected.model_spec.name = "demo"
    head = predict_pb2.PredictResponse()
    head.CopyFrom(expected)
    for name, value in outputs.items():
        fill_tensor_proto(expected.outputs[name], value)

    raw = serialize_with_tensors(head, "outputs", outputs, min_bytes=0)

    assert predict_pb2.PredictResponse.FromString(raw) == expected
    message, contents = split_tensor_contents(raw, OUTPUTS)
    assert _rejoin(message, contents, predict_pb2.PredictResponse, "outputs") == expected
    parsed = predict_pb2.PredictResponse.FromString(message)
    for name, value in outputs.items():
        got = to_ndarray(parsed.outputs[name], name, contents.get(name))
        np.testing.assert_array_equal(got, value)


def test_small_messages_take_protobufs_own_path():
    x = np.ones((2, 8), np.float32)
    request = _request(image=x)
    head = predict_pb2.PredictRequest()
    head.CopyFrom(request)
    head.ClearField("inputs")
    raw = serialize_with_tensors(head, "inputs", {"image": x})  # under MIN_BYTES
    assert raw == request.SerializeToString()  # byte for byte protobuf's
    message, arrays = parse_with_tensors(predict_pb2.PredictRequest, raw, "inputs")
    assert message == request
    assert arrays["image"].base is not None and not np.shares_memory(
        arrays["image"], np.frombuffer(raw, np.uint8)
    )
    message, arrays = parse_with_tensors(predict_pb2.PredictRequest, raw, "inputs", min_bytes=0)
    assert np.shares_memory(arrays["image"], np.frombuffer(raw, np.uint8))
    np.testing.assert_array_equal(arrays["image"], x)
