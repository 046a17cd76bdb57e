"""TF Serving behaviours behind medflow-model-server's flags: warm-up replay, the signature
method-name check, the REST deadline, the monitoring config and TFLite versions."""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from medflow.serving.config import ModelSpecConfig
from medflow.serving.errors import ServingStatus
from medflow.serving.servable import LoadOptions, load_version
from medflow.serving.server import ModelServer, ServerOptions
from medflow.serving.warmup import WARMUP_FILE, replay_warmup
from tests.integration.test_serving_helpers import tfserving_testdata


@pytest.fixture(scope="module")
def testdata() -> Path:
    return tfserving_testdata()


def _with_warmup(testdata: Path, tmp_path: Path, input_name: str) -> Path:
    import tensorflow as tf

    version = tmp_path / "m" / "00000123"
    shutil.copytree(testdata / "saved_model_half_plus_two_cpu" / "00000123", version)
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
    (version / WARMUP_FILE).parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(version / WARMUP_FILE)) as writer:
        writer.write(log.SerializeToString())
    return version


def test_warmup_requests_are_replayed_before_the_version_is_served(testdata, tmp_path):
    version = _with_warmup(testdata, tmp_path, "x")
    loaded = load_version("m", 123, version, LoadOptions(warmup=True))
    assert replay_warmup(loaded, LoadOptions(warmup_iterations=3)) == 3


def test_a_warmup_request_that_fails_fails_the_load(testdata, tmp_path):
    version = _with_warmup(testdata, tmp_path, "not_an_input")
    with pytest.raises(ServingStatus, match="not_an_input"):
        load_version("m", 123, version, LoadOptions(warmup=True))
    load_version("m", 123, version, LoadOptions(warmup=False))  # --enable_model_warmup=false


def _stub(server) -> prediction_service_pb2_grpc.PredictionServiceStub:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _classify_request() -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tf2"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    return request


@pytest.mark.parametrize("check", [False, True])
def test_signature_method_name_check_is_off_unless_asked(testdata, check):
    # TF2 SavedModels write method_name "tensorflow/serving/predict" on every signature.
    models = [ModelSpecConfig("tf2", testdata / "saved_model_half_plus_two_tf2_cpu")]
    options = ServerOptions(
        grpc_port=0, rest_port=None, poll_seconds=0, loading=LoadOptions(check_method_name=check)
    )
    with ModelServer(models, options) as server:
        if not check:
            result = _stub(server).Classify(_classify_request(), timeout=30).result
            assert result.classifications[0].classes[0].score == 3.0
            return
        with pytest.raises(grpc.RpcError) as err:
            _stub(server).Classify(_classify_request(), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "method_name to be tensorflow/serving/classify" in err.value.details()


def _get(port: int, path: str, body: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=body, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def test_rest_deadline_monitoring_path_and_tflite(testdata):
    models = [ModelSpecConfig("lite", testdata / "saved_model_half_plus_two_tflite")]
    options = ServerOptions(
        grpc_port=0,
        rest_port=0,
        poll_seconds=0,
        metrics_path="/metrics",
        rest_timeout_s=0.5,
        loading=LoadOptions(prefer_tflite=True),
    )
    with ModelServer(models, options) as server:
        assert _get(server.rest_port, "/v1/models/lite:predict", b'{"instances": [[1.0]]}') == 200
        app = server._rest._httpd.app
        handle = app._handle

        def slow(*args):  # a request that takes longer than the deadline
            time.sleep(2)
            return handle(*args)

        app._handle = slow
        assert _get(server.rest_port, "/v1/models/lite:predict", b'{"instances": [[1.0]]}') == 504
        app._handle = handle
        assert _get(server.rest_port, "/metrics") == 200
        assert _get(server.rest_port, "/monitoring/prometheus/metrics") == 404
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "lite"
        request.inputs["x"].dtype = 1
        request.inputs["x"].float_val.extend([2.0, 4.0])
        request.inputs["x"].tensor_shape.dim.add().size = 2
        y = _stub(server).Predict(request, timeout=30).outputs["y"]
        assert list(y.float_val) == [3.0, 4.0]  # TFLite's interpreter ran model.tflite


def test_tflite_folder_without_prefer_flag_is_not_a_version(testdata):
    models = [ModelSpecConfig("lite", testdata / "saved_model_half_plus_two_tflite")]
    with ModelServer(models, ServerOptions(grpc_port=0, rest_port=None, poll_seconds=0)) as srv:
        assert srv.manager.model_names == ["lite"]
        with pytest.raises(ServingStatus, match="Could not find any versions"):
            srv.manager.status("lite")
