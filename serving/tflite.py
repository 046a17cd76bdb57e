"""TFLite versions (``--prefer_tflite_model``): ``<version>/model.tflite`` run by TensorFlow's
TFLite interpreter behind the same interface as a SavedModel version.

Signatures as TF Serving's TFLite session gives them: the SignatureDefs stored in the model's
``signature_defs_metadata`` (a FlexBuffer map of name -> serialized SignatureDef, written by
TFLite's signature_def_util), or else one ``serving_default`` predict signature whose input and
output keys are the model's tensor names.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from medflow.serving.errors import ServingStatus, invalid
from medflow.serving.servable import DEFAULT_SIGNATURE, PREDICT_METHOD
from medflow.serving.tensors import check_inputs

SIGNATURE_METADATA = b"signature_defs_metadata"


def _stored_signature_defs(model_bytes: bytes) -> dict | None:
    from flatbuffers import flexbuffers
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() != SIGNATURE_METADATA:
            continue
        data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        stored = flexbuffers.GetRoot(data).AsMap
        return {
            key: meta_graph_pb2.SignatureDef.FromString(bytes(stored[key].AsStringBytes))
            for key in stored.Keys.Value
        }
    return None


def _default_signature_def(interpreter):
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.python.framework import dtypes

    sig = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for details, target in (
        (interpreter.get_input_details(), sig.inputs),
        (interpreter.get_output_details(), sig.outputs),
    ):
        for d in details:
            info = target[d["name"]]
            info.name = f"{d['name']}:0"
            info.dtype = dtypes.as_dtype(d["dtype"]).as_datatype_enum
            for size in d["shape_signature"]:
                info.tensor_shape.dim.add().size = int(size)
    return sig


class TfLiteVersion:
    """A ``model.tflite`` version; requests run one at a time on its interpreter."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        import tensorflow as tf

        self.name = name
        self.version = version
        self.path = path
        model_bytes = (path / "model.tflite").read_bytes()
        self._interpreter = tf.lite.Interpreter(model_content=model_bytes)
        self._interpreter.allocate_tensors()
        stored = _stored_signature_defs(model_bytes)
        self.signature_defs = stored or {
            DEFAULT_SIGNATURE: _default_signature_def(self._interpreter)
        }
        self._index = {
            d["name"]: d["index"]
            for d in self._interpreter.get_input_details() + self._interpreter.get_output_details()
        }
        self._lock = threading.Lock()

    def signature(self, signature_name: str):
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.signature_defs:
            import grpc

            raise ServingStatus(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            )
        return key, self.signature_defs[key]

    def _tensor_index(self, info) -> int:
        name = info.name[:-2] if info.name.endswith(":0") else info.name
        if name not in self._index:
            raise invalid(f"model.tflite of {self.name} has no tensor {info.name}")
        return self._index[name]

    def run(self, signature_name: str, inputs: dict, output_filter=()) -> dict:
        key, sig = self.signature(signature_name)
        check_inputs(inputs, sig, key)
        wanted = list(output_filter) or list(sig.outputs)
        unknown = [o for o in wanted if o not in sig.outputs]
        if unknown:
            raise invalid(f"output_filter names {unknown} not in signature '{key}' outputs")
        it = self._interpreter
        with self._lock:
            try:
                for k, value in inputs.items():
                    index = self._tensor_index(sig.inputs[k])
                    if tuple(it.get_tensor(index).shape) != value.shape:
                        it.resize_tensor_input(index, list(value.shape))
                        it.allocate_tensors()
                    it.set_tensor(index, np.asarray(value))
                it.invoke()
                return {
                    o: np.array(it.get_tensor(self._tensor_index(sig.outputs[o]))) for o in wanted
                }
            except ValueError as exc:
                raise invalid(f"model.tflite rejected the input: {exc}") from exc

    def close(self) -> None:
        """Nothing to drain: TFLite versions run unbatched."""
