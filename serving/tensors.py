"""TensorProto <-> numpy conversion and request validation against a SignatureDef."""

from __future__ import annotations

import math

import numpy as np

from medflow.serving import wire
from medflow.serving.errors import invalid

# A single value "splat" over a shape is expanded in memory; refuse expansions beyond this.
MAX_SPLAT_BYTES = 2**30

# DataType enum values (tensorflow/core/framework/types.proto) for the dtypes models use.
_NP_BY_ENUM = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    7: object,  # DT_STRING
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}
_ENUM_BY_NP = {np.dtype(v): k for k, v in _NP_BY_ENUM.items() if v is not object}
_NAME_BY_ENUM = {
    1: "float",
    2: "double",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    9: "int64",
    10: "bool",
    17: "uint16",
    19: "half",
    22: "uint32",
    23: "uint64",
}
# TensorProto repeated-value field per dtype when tensor_content is not used.
_VAL_FIELD = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    9: "int64_val",
    10: "bool_val",
    17: "int_val",
    19: "half_val",
    22: "uint32_val",
    23: "uint64_val",
}


def dtype_name(enum: int) -> str:
    return _NAME_BY_ENUM.get(enum, f"dtype {enum}")


def numpy_dtype(enum: int):
    """numpy dtype for a DataType enum; raises INVALID_ARGUMENT for unsupported ones."""
    if enum not in _NP_BY_ENUM:
        raise invalid(f"tensor dtype {enum} is not supported by this server")
    return _NP_BY_ENUM[enum]


def to_ndarray(proto, name: str, content=None) -> np.ndarray:
    """Decode a TensorProto; INVALID_ARGUMENT when its values do not fill its shape.

    ``content``: the tensor_content bytes when they were taken out of ``proto`` on the wire
    (:func:`serving.wire.split_tensor_contents`); numbers are then a view of that buffer.
    """
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"input '{name}' has an unknown rank; send a fully defined shape")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(s < 0 for s in shape):
        raise invalid(f"input '{name}' has a negative dimension in shape {list(shape)}")
    count = math.prod(shape)  # Python ints: a crafted shape must not wrap around
    dtype = numpy_dtype(proto.dtype)
    if content is None and dtype is not object:
        content = proto.tensor_content  # a copy each time the field is read: read it once
    if dtype is object:
        values = np.array(list(proto.string_val), dtype=object)
    elif len(content):
        itemsize = np.dtype(dtype).itemsize
        if len(content) != count * itemsize:
            raise invalid(
                f"input '{name}': tensor_content has {len(content)} bytes but shape "
                f"{list(shape)} of {dtype_name(proto.dtype)} needs {count * itemsize}"
            )
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    else:
        raw = getattr(proto, _VAL_FIELD[proto.dtype])
        if proto.dtype == 19:
            values = np.array(raw, dtype=np.uint16).view(np.float16)
        else:
            values = np.array(raw, dtype=dtype)
    if values.size == 1 and count != 1:  # TF's splat convention: one value fills the shape
        itemsize = 8 if dtype is object else np.dtype(dtype).itemsize
        if count * itemsize > MAX_SPLAT_BYTES:
            raise invalid(
                f"input '{name}': one value cannot fill shape {list(shape)} "
                f"({count * itemsize} bytes, limit {MAX_SPLAT_BYTES})"
            )
        values = np.full(count, values[0], dtype=values.dtype)
    if values.size != count:
        raise invalid(
            f"input '{name}' has {values.size} values but its shape {list(shape)} needs {count}"
        )
    return values.reshape(shape)


def to_tensor_proto(array: np.ndarray):
    """Encode a numpy array as TensorProto (tensor_content for numbers, string_val for bytes)."""
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(proto, array)
    return proto


def fill_tensor_proto(proto, array: np.ndarray, typed: bool = False) -> None:
    """Write ``array`` into an empty TensorProto field in place (e.g. ``request.inputs[key]``).

    Same encoding as :func:`to_tensor_proto` (numbers as little-endian ``tensor_content``,
    which TF Serving accepts), without building a second message and copying it over with
    ``CopyFrom``. ``typed``: numbers in the typed field instead (``float_val``, ``int_val``,
    ...), as TF Serving answers with them (``Tensor::AsProtoField``).
    """
    array = np.asarray(array)
    if _is_strings(array):
        proto.dtype = 7
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)
        )
    else:
        proto.dtype, array = _wire_numbers(array)
        if typed:  # protobuf's own extend: ~10 us a tensor, a third of packing them here
            values = array.view(np.uint16) if proto.dtype == 19 else array
            getattr(proto, _VAL_FIELD[proto.dtype]).extend(values.reshape(-1).tolist())
        else:
            proto.tensor_content = array.tobytes()
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size


def _is_strings(array: np.ndarray) -> bool:
    return array.dtype == object or array.dtype.kind in ("S", "U")


def _wire_numbers(array: np.ndarray) -> tuple[int, np.ndarray]:
    """(DataType enum, C-contiguous little-endian array) of a numeric array."""
    enum = _ENUM_BY_NP.get(array.dtype.newbyteorder("="))
    if enum is None:
        raise TypeError(f"cannot encode dtype {array.dtype}")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    # (np.ascontiguousarray would turn a 0-d array into 1-d)
    return enum, array if array.flags.c_contiguous else np.ascontiguousarray(array)


def serialize_with_tensors(
    message, map_name: str, arrays: dict, min_bytes: int | None = None, typed: bool = False
) -> bytes:
    """``message`` serialized with ``arrays`` added to its ``map<string, TensorProto>`` field
    ``map_name`` -- what filling the map with :func:`fill_tensor_proto` (``typed`` as there)
    and calling ``SerializeToString`` gives, but numeric arrays are joined in straight from
    their memory (one copy instead of three, :mod:`serving.wire`) once they hold ``min_bytes``
    (default ``serving.wire.MIN_BYTES``) or more; then ``typed`` applies to float and double
    tensors only (integers keep ``tensor_content``). String arrays go through protobuf.
    """
    from tensorflow.core.framework import tensor_pb2

    limit = wire.MIN_BYTES if min_bytes is None else min_bytes
    if sum(np.asarray(a).nbytes for a in arrays.values()) < limit:
        target = getattr(message, map_name)
        for key, value in arrays.items():
            fill_tensor_proto(target[key], value, typed)
        return message.SerializeToString()
    field_number = message.DESCRIPTOR.fields_by_name[map_name].number
    chunks: list = []
    for key, value in arrays.items():
        array = np.asarray(value)
        if _is_strings(array):
            fill_tensor_proto(getattr(message, map_name)[key], array)
            continue
        enum, array = _wire_numbers(array)
        header = tensor_pb2.TensorProto(dtype=enum)
        for size in array.shape:
            header.tensor_shape.dim.add().size = size
        # Large integer tensors stay in tensor_content: as varints (int_val) they cost far
        # more than their bytes to write and to read (65 ms / 120 ms for 1.6 M int32).
        fixed = typed and enum in (1, 2)  # float_val / double_val: the same bytes, packed
        number, payload = wire.packed_values(enum, array) if fixed else (wire.TENSOR_CONTENT, array)
        chunks += wire.tensor_map_entry(
            field_number, key, header.SerializeToString(), payload, number
        )
    return b"".join([message.SerializeToString(), *chunks])


def signature_shape(tensor_info) -> list[int] | None:
    """Shape of a TensorInfo as a list (-1 for unknown dims), None for unknown rank."""
    if tensor_info.tensor_shape.unknown_rank:
        return None
    return [d.size for d in tensor_info.tensor_shape.dim]


def check_inputs(inputs: dict[str, np.ndarray], signature_def, signature_name: str) -> None:
    """INVALID_ARGUMENT unless ``inputs`` has exactly the signature's keys and dtypes.

    Shapes are left to the graph, as TF Serving does: a signature's static shape is what it
    was traced with, and TensorFlow's own error answers inputs the graph cannot run.
    """
    expected = set(signature_def.inputs)
    sent = set(inputs)
    if sent != expected:
        raise invalid(
            f"input size does not match signature '{signature_name}': {len(sent)}!={len(expected)} "
            f"len({sorted(sent)}) != len({sorted(expected)}). Sent extra: {sorted(sent - expected)}. "
            f"Missing but required: {sorted(expected - sent)}."
        )
    for key, info in signature_def.inputs.items():
        array = inputs[key]
        want = numpy_dtype(info.dtype)
        got_string = array.dtype == object
        if (want is object) != got_string or (not got_string and array.dtype != np.dtype(want)):
            got = "string" if got_string else dtype_name(_ENUM_BY_NP.get(array.dtype, -1))
            raise invalid(
                f"input '{key}' of signature '{signature_name}' expects {dtype_name(info.dtype)} "
                f"but {got} is provided"
            )


def parse_split(message_class, raw: bytes, map_name: str, min_bytes: int | None = None):
    """(message, {key: tensor_content view}) of a serialized message with a
    ``map<string, TensorProto>`` field ``map_name``: when ``raw`` holds ``min_bytes`` (default
    ``serving.wire.MIN_BYTES``) or more, the tensor bytes stay in ``raw`` (no copy,
    :mod:`serving.wire`) and protobuf parses the rest; small messages and unusual encodings are
    parsed by protobuf as a whole (no views). Pass the views to :func:`to_ndarray`."""
    limit = wire.MIN_BYTES if min_bytes is None else min_bytes
    field_number = message_class.DESCRIPTOR.fields_by_name[map_name].number
    split = wire.split_tensor_contents(raw, field_number) if len(raw) >= limit else None
    if split is None:
        return message_class.FromString(raw), {}
    return message_class.FromString(split[0]), split[1]


def parse_with_tensors(message_class, raw: bytes, map_name: str, min_bytes: int | None = None):
    """(message, {key: ndarray}) of such a message (:func:`parse_split`), numbers as views."""
    message, contents = parse_split(message_class, raw, map_name, min_bytes)
    tensors = getattr(message, map_name)
    return message, {key: to_ndarray(tensors[key], key, contents.get(key)) for key in tensors}
