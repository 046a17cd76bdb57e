"""Request handling shared by gRPC and REST: Predict, Classify, Regress, metadata, status.

Everything here takes and returns the official tensorflow-serving-api protos, so the gRPC
service is a thin adapter and the REST app converts JSON to the same protos.
"""

from __future__ import annotations

import numpy as np

from medflow.serving.errors import invalid
from medflow.serving.manager import ModelManager
from medflow.serving.servable import CLASSIFY_METHOD, REGRESS_METHOD
from medflow.serving.tensors import serialize_with_tensors, to_ndarray

# tensorflow.error.Code values used in ModelVersionStatus.status.
_OK, _UNKNOWN = 0, 2


def _addressed(manager: ModelManager, model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    return manager.resolve(model_spec.name, version, model_spec.version_label or None)


def _answer_spec(response_spec, loaded, signature_name: str) -> None:
    response_spec.name = loaded.name
    response_spec.version.value = loaded.version
    response_spec.signature_name = signature_name


def predict(manager: ModelManager, request, contents: dict | None = None) -> bytes:
    """PredictRequest -> serialized PredictResponse (output tensors copied in once).

    ``contents``: tensor_content buffers taken out of ``request`` on the wire, by input name.
    """
    from tensorflow_serving.apis import predict_pb2

    loaded = _addressed(manager, request.model_spec)
    key, _ = loaded.signature(request.model_spec.signature_name)
    contents = contents or {}
    inputs = {k: to_ndarray(v, k, contents.get(k)) for k, v in request.inputs.items()}
    outputs = loaded.run(key, inputs, list(request.output_filter))
    response = predict_pb2.PredictResponse()
    _answer_spec(response.model_spec, loaded, key)
    return serialize_with_tensors(response, "outputs", outputs)


def _serialized_examples(input_proto) -> np.ndarray:
    """tensorflow.serving.Input -> serialized tf.Examples (context merged into each)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = list(input_proto.example_list.examples)
    elif kind == "example_list_with_context":
        ctx = input_proto.example_list_with_context.context
        examples = []
        for ex in input_proto.example_list_with_context.examples:
            merged = type(ex)()
            merged.CopyFrom(ctx)
            merged.MergeFrom(ex)
            examples.append(merged)
    else:
        examples = []
    if not examples:
        raise invalid("Input is empty.")
    return np.array([e.SerializeToString() for e in examples], dtype=object)


def _run_examples(manager: ModelManager, request, method: str, what: str):
    loaded = _addressed(manager, request.model_spec)
    key, sig = loaded.signature(request.model_spec.signature_name)
    if sig.method_name != method:
        raise invalid(
            f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}"
        )
    if len(sig.inputs) != 1:
        raise invalid(f"{what} signature '{key}' must have exactly one input (serialized examples)")
    input_key = next(iter(sig.inputs))
    outputs = loaded.run(key, {input_key: _serialized_examples(request.input)})
    return loaded, key, outputs


def classify(manager: ModelManager, request):
    """ClassificationRequest -> ClassificationResponse (signature method must be classify)."""
    from tensorflow_serving.apis import classification_pb2

    loaded, key, out = _run_examples(manager, request, CLASSIFY_METHOD, "classification")
    classes, scores = out.get("classes"), out.get("scores")
    if classes is None and scores is None:
        raise invalid(f"classification signature '{key}' has neither 'classes' nor 'scores' output")
    n = len(classes if classes is not None else scores)
    response = classification_pb2.ClassificationResponse()
    _answer_spec(response.model_spec, loaded, key)
    for i in range(n):
        row = response.result.classifications.add()
        width = (classes if classes is not None else scores).reshape(n, -1).shape[1]
        for j in range(width):
            item = row.classes.add()
            if classes is not None:
                label = classes.reshape(n, -1)[i, j]
                item.label = label.decode() if isinstance(label, bytes) else str(label)
            if scores is not None:
                item.score = float(scores.reshape(n, -1)[i, j])
    return response


def regress(manager: ModelManager, request):
    """RegressionRequest -> RegressionResponse (signature method must be regress)."""
    from tensorflow_serving.apis import regression_pb2

    loaded, key, out = _run_examples(manager, request, REGRESS_METHOD, "regression")
    if "outputs" not in out:
        raise invalid(f"regression signature '{key}' has no 'outputs' output")
    values = out["outputs"].reshape(-1)
    response = regression_pb2.RegressionResponse()
    _answer_spec(response.model_spec, loaded, key)
    for v in values:
        response.result.regressions.add().value = float(v)
    return response


def model_metadata(manager: ModelManager, request):
    """GetModelMetadataRequest -> response with the SignatureDefMap (metadata_field signature_def)."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    fields = list(request.metadata_field)
    if not fields:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    unsupported = [f for f in fields if f != "signature_def"]
    if unsupported:
        raise invalid(f"Metadata field {unsupported[0]} is not supported")
    loaded = _addressed(manager, request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _answer_spec(response.model_spec, loaded, "")
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in loaded.signature_defs.items():
        sig_map.signature_def[name].CopyFrom(sig)
    response.metadata["signature_def"].Pack(sig_map)
    return response


def model_status(manager: ModelManager, request):
    """GetModelStatusRequest -> GetModelStatusResponse."""
    from tensorflow_serving.apis import get_model_status_pb2

    spec = request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    if spec.version_label:
        version = manager.resolve(spec.name, None, spec.version_label).version
    response = get_model_status_pb2.GetModelStatusResponse()
    state_enum = get_model_status_pb2.ModelVersionStatus.State
    for st in manager.status(spec.name, version):
        item = response.model_version_status.add()
        item.version = st.version
        item.state = state_enum.Value(st.state)
        item.status.error_code = _UNKNOWN if st.error else _OK
        item.status.error_message = st.error
    return response
