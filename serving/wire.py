"""Protobuf wire format for big tensors: read and write ``tensor_content`` without copies.

A Predict request for 32 images of 224x224 carries 6.4 MB in one ``TensorProto.tensor_content``
field. Parsing it with protobuf copies those bytes into the message, reading the field copies
them again into a new ``bytes`` object, and TensorFlow copies them once more. On a VM, where a
fresh page costs a fault, each copy of 6.4 MB costs several milliseconds -- as much as the model
itself on 16 cores (BENCHMARKS.md, Serving).

:func:`split_tensor_contents` reads a serialized message whose field ``map_field`` is a
``map<string, TensorProto>`` (``PredictRequest.inputs``, ``PredictResponse.outputs``): it
returns the message re-encoded without the ``tensor_content`` bytes (a few hundred bytes that
protobuf parses as usual) and, per map key, a zero-copy view of those bytes in the received
buffer. Anything unusual -- a key sent twice, a TensorProto split over several fields, group
wire types, truncated data -- returns None and the caller parses the message with protobuf,
which gives the standard semantics and errors.

:func:`tensor_map_entry` is the reverse: one map entry whose ``tensor_content`` is written
straight from an array's memory by ``b"".join``, so a request or response is built with one
copy of its tensors.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

TENSOR_CONTENT = 4  # TensorProto.tensor_content
# Below this many tensor bytes protobuf's own C parser and serializer are faster than this
# module's Python walk (measured: ~30 us more per small message, ~1 ms less at 6.4 MB).
MIN_BYTES = 256 * 2**10
_LEN = 2  # wire type of strings, bytes and messages


class _Unusual(Exception):
    """The buffer is not in the simple shape handled here (the caller falls back)."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Unusual
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, field start, value start, value end) of each field in ``buf[start:end]``."""
    pos = start
    while pos < end:
        field_start = pos
        tag, pos = _varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            _, value_end = _varint(buf, pos, end)
        elif wire_type == 1:
            value_end = pos + 8
        elif wire_type == _LEN:
            size, pos = _varint(buf, pos, end)
            value_end = pos + size
        elif wire_type == 5:
            value_end = pos + 4
        else:  # groups (3, 4) and invalid types
            raise _Unusual
        if number == 0 or value_end > end:
            raise _Unusual
        yield number, field_start, pos, value_end
        pos = value_end


def varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def len_field(number: int, payload_size: int) -> bytes:
    """Tag and length of a length-delimited field (its payload follows)."""
    return varint_bytes(number << 3 | _LEN) + varint_bytes(payload_size)


def _key_field(key: str) -> bytes:
    """A map entry's key field (field 1)."""
    encoded = key.encode()
    return len_field(1, len(encoded)) + encoded


# TensorProto fields whose bytes are the values' little-endian memory: tensor_content, and
# float_val / double_val (packed, as TF Serving's typed answers write them) -> the DataType
# they belong to (0: any).
_DTYPE = 1
_FIXED_VALUES = {TENSOR_CONTENT: 0, 5: 1, 6: 2}
_MIN_TYPED_VIEW = 4096  # smaller typed values are left to protobuf (a view saves nothing)


def split_tensor_contents(raw: bytes, map_field: int) -> tuple[bytes, dict[str, memoryview]] | None:
    """(message without the values' bytes, {key: view of them}), or None.

    The values' bytes are a TensorProto's ``tensor_content``, or its ``float_val`` /
    ``double_val`` of a DT_FLOAT / DT_DOUBLE tensor (the same little-endian memory, packed).
    Keys whose TensorProto has neither (or empty ones) are left out of the dict and stay whole
    in the message.
    """
    buf = memoryview(raw)
    try:
        return _split(buf, map_field)
    except _Unusual:
        return None


def _split(buf: memoryview, map_field: int) -> tuple[bytes, dict[str, memoryview]]:
    parts: list[bytes | memoryview] = []
    contents: dict[str, memoryview] = {}
    keys: set[str] = set()
    for number, field_start, start, end in _fields(buf, 0, len(buf)):
        if number != map_field:
            parts.append(buf[field_start:end])
            continue
        key = None
        value = None
        for n, _, s, e in _fields(buf, start, end):
            if n == 1 and key is None:
                try:
                    key = bytes(buf[s:e]).decode()
                except UnicodeDecodeError:
                    raise _Unusual from None
            elif n == 2 and value is None:
                value = (s, e)
            else:  # a repeated key/value field (protobuf would merge) or an unknown field
                raise _Unusual
        key = key or ""
        if key in keys:  # protobuf keeps the last entry; let it
            raise _Unusual
        keys.add(key)
        if value is None:
            parts.append(buf[field_start:end])
            continue
        tensor: list[memoryview] = []
        content = None
        dtype = field = 0
        for n, fs, s, e in _fields(buf, *value):
            if n == TENSOR_CONTENT or (n in _FIXED_VALUES and e - s >= _MIN_TYPED_VIEW):
                if content is not None:
                    raise _Unusual
                content, field = buf[s:e], n
            else:
                if n == _DTYPE:
                    dtype = _varint(buf, s, e)[0]
                tensor.append(buf[fs:e])
        if content is not None and field != TENSOR_CONTENT and _FIXED_VALUES[field] != dtype:
            raise _Unusual  # e.g. float_val of a DT_DOUBLE tensor: protobuf's path decides
        if not content:
            parts.append(buf[field_start:end])
            continue
        contents[key] = content
        tensor_bytes = b"".join(tensor)
        key_field = _key_field(key) if key else b""  # proto3 omits the empty default
        entry = key_field + len_field(2, len(tensor_bytes)) + tensor_bytes
        parts += [len_field(map_field, len(entry)), entry]
    return b"".join(parts), contents


def tensor_map_entry(
    map_field: int, key: str, tensor_header: bytes, array, value_field: int = TENSOR_CONTENT
) -> list:
    """Chunks of one ``map<string, TensorProto>`` entry: ``tensor_header`` (a serialized
    TensorProto with dtype and shape, no values) plus ``array``'s bytes as its field
    ``value_field`` (tensor_content, or a packed typed field such as float_val with the bytes
    of :func:`packed_values`).

    ``b"".join`` of the chunks (with the rest of the message) copies the array's memory once.
    ``array`` (an ndarray or bytes) must be C-contiguous and little-endian.
    """
    size = array.size if isinstance(array, np.ndarray) else len(array)
    data = memoryview(array).cast("B") if size else memoryview(b"")
    value = [tensor_header, len_field(value_field, data.nbytes), data]
    value_size = len(value[0]) + len(value[1]) + data.nbytes
    key_field = _key_field(key)
    entry_size = len(key_field) + len(len_field(2, value_size)) + value_size
    return [len_field(map_field, entry_size), key_field, len_field(2, value_size), *value]


# TensorProto's typed value fields, as TensorFlow's Tensor::AsProtoField fills them (what TF
# Serving answers with): DataType enum -> (field number, packed fixed-width little-endian dtype,
# or None for varints).
TYPED_FIELDS = {
    1: (5, "<f4"),  # float_val
    2: (6, "<f8"),  # double_val
    3: (7, None),  # int_val (int32, uint8, int16, int8, uint16 all go in int_val)
    4: (7, None),
    5: (7, None),
    6: (7, None),
    17: (7, None),
    9: (10, None),  # int64_val
    10: (11, None),  # bool_val
    19: (13, None),  # half_val: the float16 bit patterns
    22: (16, None),  # uint32_val
    23: (17, None),  # uint64_val
}


def packed_values(enum: int, array: np.ndarray) -> tuple[int, bytes | np.ndarray]:
    """(field number, payload) of ``array`` as the packed typed field of TensorProto for
    DataType ``enum`` (a key of :data:`TYPED_FIELDS`)."""
    number, fixed = TYPED_FIELDS[enum]
    flat = array.reshape(-1)
    if fixed:
        return number, np.ascontiguousarray(flat, dtype=fixed)
    if enum == 19:
        flat = flat.view(np.uint16)
    return number, packed_varints(flat)


def packed_varints(values: np.ndarray) -> bytes:
    """Protobuf's varint encoding of integers, one after the other (a packed repeated field);
    negative values as 64-bit two's complement (ten bytes), as protobuf writes int32/int64."""
    if values.dtype == np.uint64:
        v = values.reshape(-1)
    else:
        v = values.reshape(-1).astype(np.int64).view(np.uint64)
    if not v.size:
        return b""
    groups = [(v >> np.uint64(7 * k)) for k in range(10)]
    sizes = np.ones(v.size, np.int64)
    for k in range(1, 10):
        sizes += groups[k] > 0
    width = int(sizes.max())
    out = np.empty((v.size, width), np.uint8)
    for k in range(width):
        more = (k < sizes - 1).astype(np.uint8) << 7
        out[:, k] = (groups[k] & np.uint64(0x7F)).astype(np.uint8) | more
    return out[np.arange(width) < sizes[:, None]].tobytes()
