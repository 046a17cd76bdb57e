"""Versions on disk: hot-swap under load, incomplete copies, not-yet-loaded models, policies."""

from __future__ import annotations

import http.client
import shutil
import threading

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from medflow.serving.config import BatchingConfig, parse_model_config
from medflow.serving.tensors import to_ndarray, to_tensor_proto
from tests.integration.test_serving_helpers import (
    add_version,
    count_polls,
    images,
    in_process,
    start_server,
    template,
    wait_until,
)


def _request(x, version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["image"].CopyFrom(to_tensor_proto(x))
    return request


def _states(channel, name="demo") -> dict[int, str]:
    """{version: state} from GetModelStatus; {} when the model has no versions (NOT_FOUND)."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    try:
        response = stub.GetModelStatus(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
        return {}
    names = get_model_status_pb2.ModelVersionStatus.State.Name
    return {s.version: names(s.state) for s in response.model_version_status}


def _available(channel, name="demo") -> set[int]:
    return {v for v, s in _states(channel, name).items() if s == "AVAILABLE"}


@pytest.mark.parametrize(
    "batching", [None, BatchingConfig(max_batch_size=8, batch_timeout_micros=2000)]
)
def test_hot_swap_under_steady_traffic(tmp_path, batching):
    add_version(tmp_path, 1)
    server = start_server(tmp_path, poll_seconds=0.1, batching=batching)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = images(2, seed=5)
    answered: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                response = stub.Predict(_request(x), timeout=10)
            except grpc.RpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            answered.append(response.model_spec.version.value)

    threads = [threading.Thread(target=client) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(answered) >= 20, what="traffic on version 1")
        add_version(tmp_path, 2)
        wait_until(
            lambda: answered[-1:] == [2] and _states(channel) == {2: "AVAILABLE", 1: "END"},
            what="traffic moved to version 2 and version 1 unloaded",
        )
        served_by_2 = len(answered)
        wait_until(lambda: len(answered) >= served_by_2 + 20, what="traffic on version 2")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    try:
        assert failures == []
        assert answered[0] == 1 and answered[-1] == 2
        # once the first answer came from version 2, version 1 answered at most the requests
        # already in flight (one per client thread)
        first_2 = answered.index(2)
        assert answered[first_2:].count(1) <= len(threads)
        # the latest policy unloaded version 1: asking for it is NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_request(x, version=1), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        response = stub.Predict(_request(x), timeout=10)
        np.testing.assert_allclose(
            to_ndarray(response.outputs["probabilities"], "p"),
            in_process(2, image=x)["probabilities"],
            atol=1e-6,
        )
    finally:
        channel.close()
        server.stop()


def test_incomplete_version_is_not_loaded_until_complete(tmp_path):
    add_version(tmp_path, 1)
    server = start_server(tmp_path, poll_seconds=0.1)
    polls = count_polls(server)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")

    def three_more_polls() -> None:
        # A version loads once it is complete and unchanged between two polls; a poll under
        # way during the copy may have seen half of it, so wait for three more to finish.
        target = polls() + 3
        wait_until(lambda: polls() >= target, what="three polls of the model folder")

    try:
        src, dst = template() / "2", tmp_path / "demo" / "2"
        # a copy in progress, file by file: variables first, saved_model.pb, then the index
        shutil.copytree(
            src / "variables", dst / "variables", ignore=shutil.ignore_patterns("*.index")
        )
        three_more_polls()
        assert _states(channel) == {1: "AVAILABLE"}
        shutil.copy2(src / "saved_model.pb", dst / "saved_model.pb")
        three_more_polls()
        assert _states(channel) == {1: "AVAILABLE"}
        shutil.copy2(src / "variables" / "variables.index", dst / "variables" / "variables.index")
        wait_until(lambda: _states(channel) == {2: "AVAILABLE", 1: "END"}, what="version 2 loaded")
    finally:
        channel.close()
        server.stop()


def test_model_not_loaded_yet(tmp_path):
    (tmp_path / "demo").mkdir()
    server = start_server(tmp_path, poll_seconds=0.1)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = images(1)
    try:
        # TF Serving: NOT_FOUND "Servable not found for request: Latest(demo)" while no
        # version of a configured model is loaded; REST 404.
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_request(x), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "Servable not found for request: Latest(demo)" in err.value.details()
        assert _states(channel) == {}
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
        conn.request("GET", "/v1/models/demo")
        assert conn.getresponse().status == 404
        conn.close()
        add_version(tmp_path, 1)
        wait_until(lambda: _states(channel) == {1: "AVAILABLE"}, what="version 1 loaded")
        assert stub.Predict(_request(x), timeout=10).model_spec.version.value == 1
    finally:
        channel.close()
        server.stop()


def test_broken_version_keeps_the_previous_one_serving(tmp_path):
    add_version(tmp_path, 1)
    server = start_server(tmp_path, poll_seconds=0.1)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        broken = tmp_path / "demo" / "2"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_until(lambda: _states(channel).get(2) == "END", what="version 2 load failure")
        assert _available(channel) == {1}
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert stub.Predict(_request(images(1)), timeout=10).model_spec.version.value == 1
    finally:
        channel.close()
        server.stop()


POLICIES = """
model_config_list {
  config { name: "latest2" base_path: "m" model_version_policy { latest { num_versions: 2 } } }
  config { name: "specific" base_path: "m" model_version_policy { specific { versions: 1 versions: 3 } } }
  config { name: "all" base_path: "m" model_version_policy { all {} } }
  config { name: "default" base_path: "m" }
}
"""


def test_version_policies_follow_the_disk(tmp_path):
    for v in (1, 2, 3):
        add_version(tmp_path, v, name="m")
    models = parse_model_config(POLICIES, source="models.config", base_dir=tmp_path)
    server = start_server(models, poll_seconds=0.1)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        assert _available(channel, "latest2") == {2, 3}
        assert _available(channel, "specific") == {1, 3}
        assert _available(channel, "all") == {1, 2, 3}
        assert _available(channel, "default") == {3}
        add_version(tmp_path, 4, name="m")
        wait_until(lambda: _available(channel, "all") == {1, 2, 3, 4}, what="version 4 in 'all'")
        wait_until(lambda: _available(channel, "latest2") == {3, 4}, what="latest2 moved on")
        assert _states(channel, "latest2")[2] == "END"
        assert _available(channel, "specific") == {1, 3}
        wait_until(lambda: _available(channel, "default") == {4}, what="default moved on")
        shutil.rmtree(tmp_path / "m" / "4")  # a bad push taken back: back to the previous ones
        wait_until(lambda: _available(channel, "latest2") == {2, 3}, what="latest2 back to 2, 3")
        wait_until(lambda: _available(channel, "default") == {3}, what="default back to 3")
    finally:
        channel.close()
        server.stop()


def test_loaded_models_are_frozen_out_of_gc_and_unloaded_ones_reclaimed(tmp_path):
    import gc
    import weakref

    from medflow.serving.config import models_in_base
    from medflow.serving.manager import ModelManager

    add_version(tmp_path, 1)
    manager = ModelManager(models_in_base(tmp_path), poll_seconds=0)
    manager.start()
    try:
        # The loaded model's objects are out of full collections (each would walk them all).
        assert gc.get_freeze_count() > 0
        first = weakref.ref(manager.resolve("demo")._model)  # the restored SavedModel
        add_version(tmp_path, 2)
        manager.poll_once()  # sees version 2
        manager.poll_once()  # unchanged since: loads 2, the latest-1 policy unloads 1
        assert manager.resolve("demo").version == 2
        assert first() is None, "the unloaded version is still alive"
    finally:
        manager.stop()
    assert gc.get_freeze_count() == 0
