"""The embedded server answers as TF Serving documents it, on TF Serving's own test models.

The expected status codes and messages are TF Serving's: ``http_rest_api_handler_test.cc``
(REST paths, model/version errors, empty and malformed JSON, answers for
``saved_model_half_plus_two_2_versions``), ``json_tensor.cc`` (a JSON value of the wrong type:
"JSON Value: ... is not of expected type: float", the classify/regress key "results"),
``api_rest.md`` (``{"error": ...}`` bodies) and ``http_rest_api_util.cc`` (canonical code to
HTTP status). Nested JSON bombs (CVE-2025-0649) crash TF Serving 2.19 (tensorflow/serving
#4116; fixes proposed in #4137/#4146 refuse them as INVALID_ARGUMENT): here they are 400 and
the server keeps serving.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from medflow.serving.config import ModelSpecConfig, VersionPolicy, models_in_base
from medflow.serving.server import ModelServer, ServerOptions
from tests.integration.test_serving_helpers import free_port, tfserving_testdata, wait_until

NAME = "saved_model_half_plus_two_2_versions"


@pytest.fixture(scope="module")
def testdata() -> Path:
    return tfserving_testdata()


@pytest.fixture(scope="module")
def server(testdata):
    # As http_rest_api_handler_test.cc: the 2-version model, specific version 123.
    models = [
        ModelSpecConfig(NAME, testdata / NAME, VersionPolicy("specific", versions=(123,))),
        ModelSpecConfig("half_plus_three", testdata / "saved_model_half_plus_three"),
    ]
    with ModelServer(models, ServerOptions(grpc_port=0, rest_port=0, poll_seconds=0)) as srv:
        yield srv


def call(server, method: str, path: str, body: bytes | str | None = None) -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}{path}", data=data, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# (method, path, body) -> TF Serving's answer (http_rest_api_handler_test.cc).
DOCUMENTED_ANSWERS = [
    ("POST", f"/v1/models/{NAME}:predict", '{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
     {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    ("POST", f"/v1/models/{NAME}/versions/123:predict", '{"instances": [1.0, 2.0]}',
     {"predictions": [2.5, 3.0]}),
    ("POST", f"/v1/models/{NAME}/versions/123:predict",
     '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}', {"outputs": [3.5, 4.0]}),
    ("POST", f"/v1/models/{NAME}:regress",
     '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }', {"results": [42]}),
    ("POST", f"/v1/models/{NAME}:classify",
     '{"signature_name": "classify_x_to_y", "examples": [ { "x": 20.0 } ] }',
     {"results": [[["", 12]]]}),
    ("GET", f"/v1/models/{NAME}", None, {"model_version_status": [{
        "version": "123", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "expected"), DOCUMENTED_ANSWERS)
def test_answers_as_tf_serving_documents(server, method, path, body, expected):
    assert call(server, method, path, body) == (200, expected)


# (case, method, path, body, HTTP status, text TF Serving's message has)
DOCUMENTED_ERRORS = [
    ("unknown path", "GET", "/v1/foo", None, 400, "Malformed request"),
    ("POST to /v1/models", "POST", "/v1/models", "", 400, "Malformed request"),
    ("no model name", "GET", "/v1/models", None, 400, "Missing model name"),
    ("GET predict", "GET", "/v1/models/foo:predict", None, 400, "Malformed request"),
    ("version not a number", "POST", "/v1/models/foo/versions/HELLO:regress", "", 400,
     "Malformed request"),
    ("version too large", "POST", f"/v1/models/foo/versions/{2**64 - 1}:regress", "", 400,
     "Failed to convert version"),
    ("unknown model", "POST", "/v1/models/foo:predict", '{ "instances": [1] }', 404,
     "Servable not found for request: Latest(foo)"),
    ("unknown model version", "POST", "/v1/models/foo/versions/50:predict",
     '{ "instances": [1] }', 404, "Servable not found"),
    ("unknown version", "POST", f"/v1/models/{NAME}/versions/99:predict",
     '{ "instances": [1.0] }', 404, f"Servable not found for request: Specific({NAME}, 99)"),
    ("unknown model status", "GET", "/v1/models/foo", None, 404,
     "Could not find any versions of model foo"),
    ("empty document", "POST", f"/v1/models/{NAME}:predict", "", 400,
     "JSON Parse error: The document is empty"),
    ("malformed JSON", "POST", f"/v1/models/{NAME}:predict", "instances = [1, 2]", 400,
     "JSON Parse error: Invalid value"),
    ("wrong dtype", "POST", f"/v1/models/{NAME}:predict", '{"instances": ["a"]}', 400,
     'JSON Value: "a" Type: String is not of expected type: float'),
    ("unknown signature", "POST", f"/v1/models/{NAME}:predict",
     '{"signature_name": "nope", "instances": [1.0]}', 400,
     'Serving signature key "nope" not found.'),
    ("nested lists (CVE-2025-0649)", "POST", f"/v1/models/{NAME}:predict",
     '{"instances": ' + "[" * 50_000 + "0.5" + "]" * 50_000 + "}", 400, "JSON"),
    ("nested objects (CVE-2025-0649)", "POST", f"/v1/models/{NAME}:predict",
     '{"instances": ' + '{"a":' * 50_000 + "1" + "}" * 50_000 + "}", 400, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [case[1:] for case in DOCUMENTED_ERRORS],
    ids=[case[0] for case in DOCUMENTED_ERRORS],
)
def test_errors_as_tf_serving_answers_them(server, method, path, body, status, needle):
    got, doc = call(server, method, path, body)
    assert (got, list(doc)) == (status, ["error"]), doc
    assert needle in doc["error"]
    # and the server is still there
    assert call(server, "GET", f"/v1/models/{NAME}")[0] == 200


def _predict(model: str, x, dtype=types_pb2.DT_FLOAT, version=None, signature=""):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    tensor = request.inputs["x"]
    tensor.dtype = dtype
    (tensor.double_val if dtype == types_pb2.DT_DOUBLE else tensor.float_val).extend(x)
    tensor.tensor_shape.dim.add().size = len(x)
    return request


@pytest.mark.parametrize(
    ("request_", "code", "needle"),
    [
        (_predict("nope", [1.0]), grpc.StatusCode.NOT_FOUND, "Servable not found"),
        (_predict(NAME, [1.0], version=7), grpc.StatusCode.NOT_FOUND, f"Specific({NAME}, 7)"),
        (
            _predict(NAME, [1.0], signature="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            _predict(NAME, [1.0], dtype=types_pb2.DT_DOUBLE),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expects float but double is provided",
        ),
    ],
    ids=["unknown model", "unknown version", "unknown signature", "wrong dtype"],
)
def test_grpc_errors_as_tf_serving_answers_them(server, request_, code, needle):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request_, timeout=30)
    assert err.value.code() == code
    assert needle in err.value.details()


def test_typed_output_fields_as_tf_serving_fills_them(server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    )
    y = stub.Predict(_predict(NAME, [1.0, 2.0]), timeout=30).outputs["y"]
    assert (list(y.float_val), y.tensor_content) == ([2.5, 3.0], b"")


def test_not_found_names_the_served_models(server):
    # issue 24, item 9: the unknown name's answer says which names there are.
    status, doc = call(server, "POST", "/v1/models/typo:predict", '{"instances": [1.0]}')
    assert status == 404
    assert f"this server serves half_plus_three, {NAME}" in doc["error"]


def test_reload_config_request_replaces_the_models(testdata, tmp_path):
    models = [ModelSpecConfig("a", testdata / "saved_model_half_plus_two_cpu")]
    with ModelServer(models, ServerOptions(grpc_port=0, rest_port=None, poll_seconds=0)) as srv:
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
        request = model_management_pb2.ReloadConfigRequest()
        config = request.config.model_config_list.config.add()
        config.name, config.base_path = "b", str(testdata / "saved_model_half_plus_three")
        config.model_platform = "tensorflow"
        response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=60
        )
        assert response.status.error_code == 0
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert stub.Predict(_predict("b", [2.0]), timeout=30).outputs["y"].float_val == [4.0]
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_predict("a", [2.0]), timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # the same name read from another folder: its versions are replaced by that folder's
        config.base_path = str(testdata / "saved_model_half_plus_two_cpu")
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=60
        )
        assert stub.Predict(_predict("b", [2.0]), timeout=30).outputs["y"].float_val == [3.0]


@pytest.mark.timeout(120)
def test_medflow_serve_finds_model_folders_added_while_it_runs(testdata, tmp_path):
    # issue 24, item 9: as TF Serving re-reads its config file, `medflow serve --model-base`
    # re-reads the base and serves a model folder that appears there.
    base = tmp_path / "models"
    shutil.copytree(testdata / "saved_model_half_plus_two_cpu", base / "first")
    port = free_port()
    cmd = [sys.executable, "-m", "medflow.cli", "serve", "--model-base", str(base)]
    cmd += ["--grpc-port", str(port), "--rest-port", "-1", "--poll-seconds", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().startswith("serving first"), "server did not start"
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{port}")
        )
        # a copy lands under a hidden name and is renamed into place, as a Pusher does
        shutil.copytree(testdata / "saved_model_half_plus_three", base / ".incoming")
        (base / ".incoming").rename(base / "second")

        def second_answers() -> bool:
            try:
                return stub.Predict(_predict("second", [2.0]), timeout=5).outputs["y"].float_val
            except grpc.RpcError:
                return False

        wait_until(second_answers, timeout=60, what="the new model folder to be served")
        assert stub.Predict(_predict("first", [2.0]), timeout=5).outputs["y"].float_val == [3.0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_models_in_base_skip_hidden_folders(tmp_path):
    (tmp_path / ".incoming").mkdir()
    (tmp_path / "m").mkdir()
    assert [m.name for m in models_in_base(tmp_path)] == ["m"]


def test_typed_fields_keep_every_dtype_exact():
    from tensorflow.core.framework import tensor_pb2
    from tensorflow.python.framework import tensor_util

    from medflow.serving.tensors import fill_tensor_proto

    arrays = [
        np.array([-1, 0, 300, -(2**31), 2**31 - 1], np.int32),
        np.array([-(2**63), 2**63 - 1], np.int64),
        np.array([2**64 - 1, 0], np.uint64),
        np.array([0, 255], np.uint8),
        np.array([1.5, -0.25], np.float16),
        np.array([True, False]),
        np.arange(6, dtype=np.float64).reshape(2, 3),
    ]
    for array in arrays:
        proto = tensor_pb2.TensorProto()
        fill_tensor_proto(proto, array, typed=True)
        assert not proto.tensor_content
        got = tensor_util.MakeNdarray(proto)  # TensorFlow's own reader of the typed fields
        assert got.dtype == array.dtype and np.array_equal(got, array)
