"""TF Serving's gRPC and REST APIs of the embedded server, through the official stubs and HTTP.

Every number is checked against the same SavedModel called in-process.
"""

from __future__ import annotations

import base64
import http.client
import json
import re

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from medflow.serving.config import parse_model_config
from medflow.serving.tensors import to_ndarray, to_tensor_proto
from tests.integration.test_serving_helpers import (
    add_version,
    image_examples,
    images,
    in_process,
    start_server,
)

MODELS_CONFIG = """
model_config_list {
  config {
    name: "demo"
    base_path: "demo"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
}
"""
LIMIT = 4 * 2**20  # gRPC message / REST body limit of this server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    add_version(base, 1)
    add_version(base, 2)
    models = parse_model_config(MODELS_CONFIG, source="test", base_dir=base)
    srv = start_server(models, max_message_bytes=LIMIT)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def rest(server, method: str, path: str, body: bytes | dict | None = None):
    """(status, parsed JSON or text) of one request to the REST port."""
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, (json.loads(raw) if "json" in ctype else raw.decode())
    finally:
        conn.close()


def predict_request(x: np.ndarray, *, version=None, label="", signature="", name="demo"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label:  # version and version_label are a oneof: setting one clears the other
        request.model_spec.version_label = label
    request.model_spec.signature_name = signature
    request.inputs["image"].CopyFrom(to_tensor_proto(x))
    return request


def assert_matches(outputs: dict, expected: dict) -> None:
    assert set(outputs) == set(expected)
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=1e-6)
    np.testing.assert_allclose(outputs["score"], expected["score"], atol=1e-6)
    np.testing.assert_array_equal(outputs["class_id"], expected["class_id"])


# --- metadata and status ---------------------------------------------------------------


def test_grpc_model_metadata(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "demo"
    response = predict_stub.GetModelMetadata(request, timeout=10)
    assert (response.model_spec.name, response.model_spec.version.value) == ("demo", 2)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    sigs = sig_map.signature_def
    assert set(sigs) == {"serving_default", "serve_examples", "classify"}
    image = sigs["serving_default"].inputs["image"]
    assert image.dtype == 1  # DT_FLOAT
    assert [d.size for d in image.tensor_shape.dim] == [-1, 28, 28, 1]
    assert set(sigs["serving_default"].outputs) == {"probabilities", "class_id", "score"}
    assert sigs["classify"].method_name == "tensorflow/serving/classify"
    assert sigs["serving_default"].method_name == "tensorflow/serving/predict"


def test_rest_model_metadata(server):
    status, doc = rest(server, "GET", "/v1/models/demo/versions/1/metadata")
    assert status == 200
    assert doc["model_spec"]["name"] == "demo" and doc["model_spec"]["version"] == "1"
    sigs = doc["metadata"]["signature_def"]["signature_def"]  # TF Serving nests it twice
    dims = sigs["serving_default"]["inputs"]["image"]["tensor_shape"]["dim"]
    assert [int(d["size"]) for d in dims] == [-1, 28, 28, 1]
    assert sigs["serving_default"]["inputs"]["image"]["dtype"] == "DT_FLOAT"
    assert rest(server, "GET", "/v1/models/demo/metadata")[1]["model_spec"]["version"] == "2"


def test_grpc_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "demo"
    response = model_stub.GetModelStatus(request, timeout=10)
    names = get_model_status_pb2.ModelVersionStatus.State.Name
    got = [(s.version, names(s.state), s.status.error_code) for s in response.model_version_status]
    assert got == [(2, "AVAILABLE", 0), (1, "AVAILABLE", 0)]
    request.model_spec.version.value = 1
    response = model_stub.GetModelStatus(request, timeout=10)
    assert [s.version for s in response.model_version_status] == [1]


def test_rest_model_status(server):
    status, doc = rest(server, "GET", "/v1/models/demo")
    assert status == 200
    assert [(s["version"], s["state"]) for s in doc["model_version_status"]] == [
        ("2", "AVAILABLE"),
        ("1", "AVAILABLE"),
    ]
    assert doc["model_version_status"][0]["status"]["error_code"] == "OK"
    status, doc = rest(server, "GET", "/v1/models/demo/labels/stable")
    assert status == 200 and [s["version"] for s in doc["model_version_status"]] == ["1"]


# --- predict and classify --------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 32])
def test_grpc_predict_equals_in_process(predict_stub, batch):
    x = images(batch, seed=batch)
    response = predict_stub.Predict(predict_request(x), timeout=10)
    assert response.model_spec.name == "demo"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    outputs = {k: to_ndarray(v, k) for k, v in response.outputs.items()}
    assert outputs["probabilities"].shape == (batch, 2)
    assert_matches(outputs, in_process(2, image=x))


def test_grpc_predict_specific_version_and_output_filter(predict_stub):
    x = images(4)
    request = predict_request(x, version=1, signature="serving_default")
    request.output_filter.append("probabilities")
    response = predict_stub.Predict(request, timeout=10)
    assert response.model_spec.version.value == 1
    assert set(response.outputs) == {"probabilities"}
    expected = in_process(1, image=x)["probabilities"]
    np.testing.assert_allclose(
        to_ndarray(response.outputs["probabilities"], "p"), expected, atol=1e-6
    )
    assert not np.allclose(expected, in_process(2, image=x)["probabilities"], atol=1e-4)


def test_grpc_predict_reads_tensor_bytes_in_place_and_leaves_odd_encodings_to_protobuf(channel):
    """Plain requests take the zero-copy decoder (serving.wire); two serialized requests
    concatenated (protobuf merges them: the last "image" entry wins) take protobuf's parser.
    Both must give the in-process numbers."""
    x = images(100, seed=7)  # 314 kB: over serving.wire.MIN_BYTES
    raw = predict_request(x).SerializeToString()
    decoy = predict_request(images(100, seed=8)).SerializeToString()
    predict = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    expected = in_process(2, image=x)
    for body in (raw, decoy + raw):
        response = predict(body, timeout=10)
        assert_matches({k: to_ndarray(v, k) for k, v in response.outputs.items()}, expected)


@pytest.mark.parametrize("batch", [1, 32])
def test_rest_predict_row_format(server, batch):
    x = images(batch, seed=100 + batch)
    status, doc = rest(server, "POST", "/v1/models/demo:predict", {"instances": x.tolist()})
    assert status == 200, doc
    rows = doc["predictions"]
    assert len(rows) == batch and set(rows[0]) == {"probabilities", "class_id", "score"}
    outputs = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    assert_matches(outputs, in_process(2, image=x))


@pytest.mark.parametrize("batch", [1, 32])
def test_rest_predict_columnar_format(server, batch):
    x = images(batch, seed=200 + batch)
    body = {"signature_name": "serving_default", "inputs": {"image": x.tolist()}}
    status, doc = rest(server, "POST", "/v1/models/demo/versions/1:predict", body)
    assert status == 200, doc
    outputs = {k: np.array(v) for k, v in doc["outputs"].items()}
    assert_matches(outputs, in_process(1, image=x))


def test_rest_predict_named_instances(server):
    x = images(3, seed=7)
    body = {"instances": [{"image": img.tolist()} for img in x]}
    status, doc = rest(server, "POST", "/v1/models/demo:predict", body)
    assert status == 200
    probs = np.array([r["probabilities"] for r in doc["predictions"]])
    np.testing.assert_allclose(probs, in_process(2, image=x)["probabilities"], atol=1e-6)


def test_grpc_classify(predict_stub):
    x = images(5, seed=11)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "demo"
    request.model_spec.signature_name = "classify"
    request.input.example_list.examples.extend(image_examples(x))
    response = predict_stub.Classify(request, timeout=10)
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "classify"
    expected = in_process(2, image=x)["probabilities"]
    rows = response.result.classifications
    assert len(rows) == 5
    assert [[c.label for c in r.classes] for r in rows] == [["normal", "abnormal"]] * 5
    scores = np.array([[c.score for c in r.classes] for r in rows])
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_rest_classify(server):
    x = images(2, seed=12)
    examples = [{"image": {"b64": base64.b64encode(img.tobytes()).decode()}} for img in x]
    body = {"signature_name": "classify", "examples": examples}
    status, doc = rest(server, "POST", "/v1/models/demo/labels/stable:classify", body)
    assert status == 200, doc
    expected = in_process(1, image=x)["probabilities"]
    assert [[c[0] for c in row] for row in doc["results"]] == [["normal", "abnormal"]] * 2
    np.testing.assert_allclose([[c[1] for c in row] for row in doc["results"]], expected, atol=1e-6)


def test_classify_needs_classes_or_scores(predict_stub):
    # As TF Serving (no --enable_signature_method_name_check): any signature of serialized
    # examples may classify, if it has a "classes" or "scores" output.
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "demo"
    request.model_spec.signature_name = "serve_examples"
    request.input.example_list.examples.extend(image_examples(images(1)))
    with pytest.raises(grpc.RpcError) as err:
        predict_stub.Classify(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'classes' nor 'scores'" in err.value.details()


# --- version labels --------------------------------------------------------------------


@pytest.mark.parametrize(("label", "version"), [("stable", 1), ("canary", 2)])
def test_version_labels(server, predict_stub, label, version):
    x = images(2, seed=3)
    response = predict_stub.Predict(predict_request(x, label=label), timeout=10)
    assert response.model_spec.version.value == version
    expected = in_process(version, image=x)
    outputs = {k: to_ndarray(v, k) for k, v in response.outputs.items()}
    assert_matches(outputs, expected)
    status, doc = rest(
        server, "POST", f"/v1/models/demo/labels/{label}:predict", {"instances": x.tolist()}
    )
    assert status == 200
    np.testing.assert_allclose(
        [r["probabilities"] for r in doc["predictions"]], expected["probabilities"], atol=1e-6
    )


# --- bad requests ----------------------------------------------------------------------


def _grpc_bad_requests():
    x = images(1)
    wrong_dtype = predict_request(x.astype(np.float64))
    # Shapes are the graph's to decide (as in TF Serving): one it cannot run gets TF's error.
    wrong_shape = predict_request(images(1)[:, :, :, 0])
    missing = predict_request(x)
    del missing.inputs["image"]
    renamed = predict_request(x)
    renamed.inputs["pixels"].CopyFrom(renamed.inputs.pop("image"))
    short_content = predict_request(x)
    short_content.inputs["image"].tensor_content = short_content.inputs["image"].tensor_content[:-4]
    huge_splat = predict_request(x)  # one value "filling" 10^12 x 28 x 28 floats
    huge_splat.inputs["image"].ClearField("tensor_content")
    huge_splat.inputs["image"].float_val.append(1.0)
    huge_splat.inputs["image"].tensor_shape.dim[0].size = 10**12
    no_dtype = predict_request(x)
    no_dtype.inputs["image"].dtype = 0
    return [
        ("unknown model", predict_request(x, name="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
        ("unknown version", predict_request(x, version=7), grpc.StatusCode.NOT_FOUND, "7"),
        (
            "unknown label",
            predict_request(x, label="beta"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "beta",
        ),
        ("wrong dtype", wrong_dtype, grpc.StatusCode.INVALID_ARGUMENT, "double"),
        ("wrong shape", wrong_shape, grpc.StatusCode.INVALID_ARGUMENT, "dimension"),
        ("missing input", missing, grpc.StatusCode.INVALID_ARGUMENT, "Missing"),
        ("wrong input name", renamed, grpc.StatusCode.INVALID_ARGUMENT, "pixels"),
        ("short tensor_content", short_content, grpc.StatusCode.INVALID_ARGUMENT, "bytes"),
        ("huge splat", huge_splat, grpc.StatusCode.INVALID_ARGUMENT, "image"),
        ("invalid dtype", no_dtype, grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
        (
            "unknown signature",
            predict_request(x, signature="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "nope",
        ),
    ]


@pytest.mark.parametrize(
    ("request_", "code", "needle"),
    [case[1:] for case in _grpc_bad_requests()],
    ids=[case[0] for case in _grpc_bad_requests()],
)
def test_grpc_bad_requests(predict_stub, request_, code, needle):
    with pytest.raises(grpc.RpcError) as err:
        predict_stub.Predict(request_, timeout=10)
    assert err.value.code() == code, err.value.details()
    assert needle in err.value.details()


def test_grpc_oversize_message_is_resource_exhausted(predict_stub):
    big = images(LIMIT // (28 * 28 * 4) + 10)
    with pytest.raises(grpc.RpcError) as err:
        predict_stub.Predict(predict_request(big), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert predict_stub.Predict(predict_request(images(1)), timeout=10).outputs


def _deep(depth: int, open_: str, close: str, leaf: str = "1") -> bytes:
    return (open_ * depth + leaf + close * depth).encode()


REST_BAD = [
    ("unknown model", "/v1/models/nope:predict", {"instances": [[1]]}, 404, "nope"),
    ("unknown version", "/v1/models/demo/versions/7:predict", {"instances": [[1]]}, 404, "7"),
    ("unknown label", "/v1/models/demo/labels/beta:predict", {"instances": [[1]]}, 400, "beta"),
    ("unknown model status", "/v1/models/nope", None, 404, "nope"),
    ("strings for floats", "/v1/models/demo:predict", {"instances": ["a"]}, 400, "image"),
    ("wrong shape", "/v1/models/demo:predict", {"instances": [[1.0, 2.0]]}, 400, "dimension"),
    ("ragged", "/v1/models/demo:predict", {"instances": [[1.0], [1.0, 2.0]]}, 400, "image"),
    ("no inputs", "/v1/models/demo:predict", {"signature_name": "serving_default"}, 400, "inputs"),
    ("both formats", "/v1/models/demo:predict", {"instances": [1], "inputs": [1]}, 400, "both"),
    ("wrong input", "/v1/models/demo:predict", {"inputs": {"image": [1], "x": [1]}}, 400, "x"),
    ("signature type", "/v1/models/demo:predict", {"signature_name": 100}, 400, "string"),
    ("malformed JSON", "/v1/models/demo:predict", b'{"instances": [1,', 400, "JSON"),
    ("not an object", "/v1/models/demo:predict", b"[1, 2]", 400, "object"),
    ("not UTF-8", "/v1/models/demo:predict", b'{"instances": "\xff\xfe"}', 400, ""),
    ("deep lists", "/v1/models/demo:predict", _deep(100_000, "[", "]"), 400, "deep"),
    ("deep objects", "/v1/models/demo:predict", _deep(100_000, '{"a":', "}"), 400, "deep"),
    (
        "deep strings",  # not caught by a bracket run: strings sit between the brackets
        "/v1/models/demo:predict",
        b'{"signature_name": "serve_examples", "instances": '
        + _deep(900, '["a",', "]", '"b"')
        + b"}",
        400,
        "",
    ),
    (
        "bad b64",
        "/v1/models/demo:classify",
        {"signature_name": "classify", "examples": [{"image": {"b64": "!!"}}]},
        400,
        "base64",
    ),
    ("no examples", "/v1/models/demo:classify", {"signature_name": "classify"}, 400, "examples"),
    ("bad verb", "/v1/models/demo:explain", {}, 400, "Malformed"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [case[1:] for case in REST_BAD],
    ids=[case[0] for case in REST_BAD],
)
def test_rest_bad_requests(server, path, body, status, needle):
    method = "GET" if body is None else "POST"
    got, doc = rest(server, method, path, body)
    assert got == status, doc
    assert isinstance(doc, dict) and needle.lower() in doc["error"].lower()
    # the server is still there and still right
    x = images(1)
    ok, doc = rest(server, "POST", "/v1/models/demo:predict", {"instances": x.tolist()})
    assert ok == 200


def test_rest_oversize_body_is_refused(server):
    body = b'{"instances": [' + b"1.0," * (LIMIT // 4 + 1) + b"1.0]}"
    got, doc = rest(server, "POST", "/v1/models/demo:predict", body)
    assert got == 413
    assert "RESOURCE_EXHAUSTED" in doc["error"]


def test_rest_oversize_body_refused_before_it_is_sent(server):
    """A client sending ``Expect: 100-continue`` learns of the limit before sending the body."""
    import socket

    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/models/demo:predict HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {LIMIT * 1000}\r\n".encode()
            + b"Expect: 100-continue\r\n\r\n"
        )
        chunks = []  # the server closes the connection after its answer
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        answer = b"".join(chunks).decode()
    assert answer.startswith("HTTP/1.1 413")
    assert "RESOURCE_EXHAUSTED" in answer


def test_get_on_predict_is_a_malformed_request(server):
    got, doc = rest(server, "GET", "/v1/models/demo:predict")  # TF Serving: INVALID_ARGUMENT
    assert got == 400 and "Malformed request" in doc["error"]


# --- metrics ---------------------------------------------------------------------------


def _metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_endpoint(server, predict_stub):
    before = rest(server, "GET", "/monitoring/prometheus/metrics")[1]
    for _ in range(3):
        predict_stub.Predict(predict_request(images(1)), timeout=10)
    with pytest.raises(grpc.RpcError):
        predict_stub.Predict(predict_request(images(1).astype(np.float64)), timeout=10)
    rest(server, "POST", "/v1/models/demo:predict", {"instances": images(2).tolist()})
    status, after = rest(server, "GET", "/monitoring/prometheus/metrics")
    assert status == 200 and isinstance(after, str)
    count = ":tensorflow:serving:request_count"

    def delta(**labels) -> float:
        return _metric(after, count, **labels) - _metric(before, count, **labels)

    assert delta(entrypoint="GRPC", model_name="demo", status="OK") == 3
    assert delta(entrypoint="GRPC", model_name="demo", status="INVALID_ARGUMENT") == 1
    assert delta(entrypoint="REST", model_name="demo", status="OK") == 1
    latency = ":tensorflow:serving:request_latency_count"
    assert _metric(after, latency, API="predict", entrypoint="GRPC", model_name="demo") >= 4
    for version in (1, 2):
        assert (
            _metric(
                after,
                ":tensorflow:serving:model_version_state",
                model_name="demo",
                state="AVAILABLE",
                version=str(version),
            )
            == 1
        )
    assert "# TYPE :tensorflow:serving:request_latency histogram" in after
    assert re.search(r':tensorflow:serving:request_latency_bucket\{.*le="\+Inf".*\} \d+', after)
    # prometheus_client's own parser reads it, with TF Serving's names and types.
    types = {f.name: f.type for f in text_string_to_metric_families(after)}
    assert types[count] == "counter" and "_total" not in after
    assert types[":tensorflow:serving:request_latency"] == "histogram"
    assert types[":tensorflow:serving:model_version_state"] == "gauge"


def test_metrics_labels_come_from_served_models_not_from_requests(server, predict_stub):
    """Issue 23, item 6: random model names in requests must not grow the metrics page."""
    before = rest(server, "GET", "/monitoring/prometheus/metrics")[1]
    names = [f"typo-{i:04d}" for i in range(300)]
    for name in names[:150]:
        with pytest.raises(grpc.RpcError) as err:
            predict_stub.Predict(predict_request(images(1), name=name), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for name in names[150:]:
        assert rest(server, "POST", f"/v1/models/{name}:predict", {"instances": [[0]]})[0] == 404
    after = rest(server, "GET", "/monitoring/prometheus/metrics")[1]
    assert not any(name in after for name in names)
    count = ":tensorflow:serving:request_count"
    not_served = {"model_name": "(not served)", "status": "NOT_FOUND"}
    grpc_delta = _metric(after, count, entrypoint="GRPC", **not_served) - _metric(
        before, count, entrypoint="GRPC", **not_served
    )
    rest_delta = _metric(after, count, entrypoint="REST", **not_served) - _metric(
        before, count, entrypoint="REST", **not_served
    )
    assert (grpc_delta, rest_delta) == (150, 150)
    labelled = set(re.findall(r'model_name="([^"]*)"', after))
    assert labelled <= {"demo", "(not served)"}  # the served model, and one bucket for the rest
