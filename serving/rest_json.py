"""TF Serving's REST JSON conventions: row ("instances") and columnar ("inputs") formats.

Numbers map to the signature's dtype, strings to UTF-8 bytes, ``{"b64": "..."}`` to raw bytes;
output string tensors whose name ends in ``_bytes`` (or that are not UTF-8) come back as
``{"b64": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import orjson

from medflow.serving.errors import invalid
from medflow.serving.tensors import dtype_name, numpy_dtype


class MalformedJson(ValueError):
    """The body is not JSON this API accepts (HTTP 400)."""


def parse_body(body: bytes) -> dict:
    """Parse a request body; MalformedJson for bad JSON, deep nesting or a non-object.

    Hostile nesting ends in json's RecursionError (no bracket pre-scan: on a 32-image body
    it cost 15% of the request); deep values that parse are refused later by numpy or by
    the REST app's RecursionError handler.
    """
    try:
        # orjson parses image-sized bodies ~3x faster than json; what it refuses but TF
        # Serving accepts (NaN, Infinity, integers beyond 64 bits) and every malformed body
        # go through json, which decides and words the error.
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not body.strip():
        raise MalformedJson("JSON Parse error: The document is empty")  # TF Serving's words
    try:
        if doc is None:
            doc = json.loads(body)
    except RecursionError as exc:
        raise MalformedJson("JSON Parse error: nesting is too deep") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedJson(f"JSON Parse error: Invalid value ({exc})") from exc
    if not isinstance(doc, dict):
        raise MalformedJson("the request body must be a JSON object")
    return doc


def _decode_strings(value):
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid('a string value given as an object must be {"b64": "<base64>"}')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error as exc:
            raise invalid(f"invalid base64 in b64 value: {exc}") from exc
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, str):
        return value.encode()
    raise invalid(f"expected a string or {{'b64': ...}}, got {type(value).__name__}")


def to_array(value, dtype_enum: int, name: str) -> np.ndarray:
    """JSON value -> array of the signature dtype (INVALID_ARGUMENT when it does not fit)."""
    dtype = numpy_dtype(dtype_enum)
    if dtype is object:
        decoded = _decode_strings(value)
        try:  # NumPy 2's np.shape raises on a ragged list already (NumPy 1: the assignment)
            array = np.empty(np.shape(decoded) if isinstance(decoded, list) else (), dtype=object)
            array[...] = decoded
        except ValueError as exc:
            raise invalid(f"input '{name}': ragged or malformed list of strings") from exc
        return array
    leaf = _first_leaf(value)
    if isinstance(leaf, (str, dict, bool)) and not (isinstance(leaf, bool) and dtype is np.bool_):
        # TF Serving's words (json_tensor.cc TypeError), then the input's name.
        raise invalid(
            f"JSON Value: {json.dumps(leaf)} Type: {_json_type(leaf)} is not of expected type: "
            f"{dtype_name(dtype_enum)} (input '{name}')"
        )
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid(f"input '{name}': cannot convert to {np.dtype(dtype).name}: {exc}") from exc


def _first_leaf(value):
    # Only the first element at each level is checked: numpy rejects mixed lists itself.
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return {str: "String", dict: "Object", list: "Array"}.get(type(value), "Number")


def request_inputs(doc: dict, sig, signature_name: str) -> tuple[dict[str, np.ndarray], bool]:
    """Inputs of a predict body and whether it used the row format."""
    if "instances" in doc and "inputs" in doc:
        raise invalid("Not both 'instances' and 'inputs' can be specified in the request")
    if "instances" not in doc and "inputs" not in doc:
        raise invalid("Missing 'inputs' or 'instances' key")
    names = list(sig.inputs)
    if "instances" in doc:
        return _row_inputs(doc["instances"], sig, names, signature_name), True
    columns = doc["inputs"]
    if len(names) == 1 and not (isinstance(columns, dict) and set(columns) == set(names)):
        columns = {names[0]: columns}
    if not isinstance(columns, dict):
        raise invalid(
            f"'inputs' must be an object with keys {names} of signature '{signature_name}'"
        )
    return _convert(columns, sig), False


def _row_inputs(instances, sig, names: list[str], signature_name: str) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise invalid("'instances' must be a non-empty list")
    named = all(isinstance(i, dict) and set(i) == set(names) for i in instances)
    if not named:
        if len(names) != 1:
            raise invalid(
                f"each instance must be an object with the keys {names} of signature "
                f"'{signature_name}'"
            )
        return _convert({names[0]: instances}, sig)
    return _convert({n: [i[n] for i in instances] for n in names}, sig)


def _convert(columns: dict, sig) -> dict[str, np.ndarray]:
    out = {}
    for key, value in columns.items():
        info = sig.inputs.get(key)
        if info is None:
            raise invalid(f"input '{key}' is not an input of the signature ({sorted(sig.inputs)})")
        out[key] = to_array(value, info.dtype, key)
    return out


def _jsonable(name: str, array: np.ndarray):
    if array.dtype == object:

        def enc(v):
            if not name.endswith("_bytes"):
                try:
                    return v.decode()
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(v).decode()}

        return np.vectorize(enc, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def response_body(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    """{"predictions": [...]} (row) or {"outputs": ...} (columnar), as TF Serving writes them."""
    if not row_format:
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return {"outputs": _jsonable(name, value)}
        return {"outputs": {k: _jsonable(k, v) for k, v in outputs.items()}}
    sizes = {v.shape[0] if v.ndim else None for v in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise invalid("outputs do not share a batch size; use the columnar 'inputs' format")
    if len(outputs) == 1:
        ((name, value),) = outputs.items()
        return {"predictions": _jsonable(name, value)}
    columns = {k: _jsonable(k, v) for k, v in outputs.items()}
    n = sizes.pop()
    return {"predictions": [{k: columns[k][i] for k in columns} for i in range(n)]}


def _feature(value, key: str):
    from tensorflow.core.example import feature_pb2

    values = value if isinstance(value, list) else [value]
    if not values:
        return feature_pb2.Feature()
    if all(isinstance(v, bool) for v in values) or all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
    if all(isinstance(v, (str, dict)) for v in values):
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=_decode_strings(values)))
    raise invalid(f"feature '{key}' mixes value types or nests lists; use one type per feature")


def _example(obj, where: str):
    from tensorflow.core.example import example_pb2

    if not isinstance(obj, dict):
        raise invalid(f"{where} must be an object of feature name -> value(s)")
    example = example_pb2.Example()
    for key, value in obj.items():
        example.features.feature[key].CopyFrom(_feature(value, key))
    return example


def examples_input(doc: dict):
    """Classify/regress body ({"examples": [...], "context": {...}}) -> tensorflow.serving.Input."""
    from tensorflow_serving.apis import input_pb2

    examples = doc.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid("'examples' must be a non-empty list of objects")
    proto = input_pb2.Input()
    if "context" in doc:
        target = proto.example_list_with_context
        target.context.CopyFrom(_example(doc["context"], "'context'"))
    else:
        target = proto.example_list
    for i, ex in enumerate(examples):
        target.examples.add().CopyFrom(_example(ex, f"examples[{i}]"))
    return proto
