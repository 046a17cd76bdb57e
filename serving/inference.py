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
    return predict_on(_addressed(manager, request.model_spec), request, contents)


def predict_on(loaded, request, contents: dict | None = None) -> bytes:
    """Predict on one loaded version; outputs in the typed fields TF Serving fills."""
    from tensorflow_serving.apis import predict_pb2

    key, _ = loaded.signature(request.model_spec.signature_name)
    contents = contents or {}
    inputs = {k: to_ndarray(v, k, contents.get(k)) for k, v in request.inputs.items()}
    outputs = loaded.run(key, inputs, list(request.output_filter))
    response = predict_pb2.PredictResponse()
    _answer_spec(response.model_spec, loaded, key)
    return serialize_with_tensors(response, "outputs", outputs, typed=True)


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


def _run_examples(loaded, signature_name: str, input_proto, method: str, check_method: bool):
    """Run a classify/regress signature on serialized examples. TF Serving checks the
    signature's method_name only with --enable_signature_method_name_check (TF2 SavedModels
    write "tensorflow/serving/predict" on every signature)."""
    key, sig = loaded.signature(signature_name)
    what = "classification" if method == CLASSIFY_METHOD else "regression"
    if check_method and sig.method_name != method:
        raise invalid(
            f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}"
        )
    if len(sig.inputs) != 1:
        raise invalid(f"{what} signature '{key}' must have exactly one input (serialized examples)")
    input_key = next(iter(sig.inputs))
    return key, loaded.run(key, {input_key: _serialized_examples(input_proto)})


def _classify_result(key: str, out: dict, result) -> None:
    classes, scores = out.get("classes"), out.get("scores")
    if classes is None and scores is None:
        raise invalid(f"classification signature '{key}' has neither 'classes' nor 'scores' output")
    first = classes if classes is not None else scores
    n = len(first)
    width = first.reshape(n, -1).shape[1]
    for i in range(n):
        row = result.classifications.add()
        for j in range(width):
            item = row.classes.add()
            if classes is not None:
                label = classes.reshape(n, -1)[i, j]
                item.label = label.decode() if isinstance(label, bytes) else str(label)
            if scores is not None:
                item.score = float(scores.reshape(n, -1)[i, j])


def _regress_result(key: str, out: dict, result) -> None:
    if "outputs" not in out:
        raise invalid(f"regression signature '{key}' has no 'outputs' output")
    for v in out["outputs"].reshape(-1):
        result.regressions.add().value = float(v)


def classify(manager: ModelManager, request):
    """ClassificationRequest -> ClassificationResponse (outputs "classes" and/or "scores")."""
    from tensorflow_serving.apis import classification_pb2

    return _examples_call(manager, request, classification_pb2.ClassificationResponse())


def regress(manager: ModelManager, request):
    """RegressionRequest -> RegressionResponse (output "outputs")."""
    from tensorflow_serving.apis import regression_pb2

    return _examples_call(manager, request, regression_pb2.RegressionResponse())


def _examples_call(manager: ModelManager, request, response):
    loaded = _addressed(manager, request.model_spec)
    return examples_on(loaded, request, response, manager.check_method_name)


def examples_on(loaded, request, response, check_method: bool = False):
    """Classify or regress (by the type of ``response``) on one loaded version."""
    method = CLASSIFY_METHOD if hasattr(response.result, "classifications") else REGRESS_METHOD
    spec = request.model_spec
    key, out = _run_examples(loaded, spec.signature_name, request.input, method, check_method)
    _answer_spec(response.model_spec, loaded, key)
    fill = _classify_result if method == CLASSIFY_METHOD else _regress_result
    fill(key, out, response.result)
    return response


def multi_inference(manager: ModelManager, request):
    """MultiInferenceRequest -> MultiInferenceResponse: classify/regress tasks of one model
    on one shared input (TF Serving's rules: one model, distinct signatures)."""
    from tensorflow_serving.apis import inference_pb2

    if not request.tasks:
        raise invalid("Expected at least one task")
    names = {t.model_spec.name for t in request.tasks}
    if len(names) != 1:
        raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    signatures = [t.model_spec.signature_name for t in request.tasks]
    if len(set(signatures)) != len(signatures):
        raise invalid("Duplicate evaluation of signature in a MultiInferenceRequest")
    loaded = _addressed(manager, request.tasks[0].model_spec)
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise invalid(f"Unsupported signature method_name: {task.method_name}")
        key, out = _run_examples(
            loaded,
            task.model_spec.signature_name,
            request.input,
            task.method_name,
            manager.check_method_name,
        )
        result = response.results.add()
        _answer_spec(result.model_spec, loaded, key)
        fill, field = _MULTI_INFERENCE_RESULTS[task.method_name]
        fill(key, out, getattr(result, field))
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


# MultiInference: per task method, how to fill its InferenceResult and the field to fill.
_MULTI_INFERENCE_RESULTS = {
    CLASSIFY_METHOD: (_classify_result, "classification_result"),
    REGRESS_METHOD: (_regress_result, "regression_result"),
}
