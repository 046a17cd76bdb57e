"""The server's metrics through prometheus_client: TF Serving's names in the exposition, one
registry per server, and the worker processes of ``--workers`` summed (multiprocess mode)."""

from __future__ import annotations

import os
import re

import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from medflow.serving import metrics as metrics_module
from medflow.serving.errors import ServingConfigError
from medflow.serving.metrics import Metrics, forget_worker, render_folder

COUNT = ':tensorflow:serving:request_count{entrypoint="GRPC",model_name="demo",status="OK"}'
LATENCY_SUM = (
    ':tensorflow:serving:request_latency_sum{API="predict",entrypoint="GRPC",model_name="demo"}'
)
BATCH_COUNT = ':tensorflow:serving:batching_session:processed_batch_size_count{model_name="demo"}'
LOADS = (
    ':tensorflow:cc:saved_model:load_attempt_count{model_path="/models/demo/1",status="success"}'
)


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([\d.e+]+)$", text, re.M)
    assert match, f"{series} not in\n{text}"
    return float(match.group(1))


def _state(version: int, state: str) -> str:
    return (
        f':tensorflow:serving:model_version_state{{model_name="demo",state="{state}",'
        f'version="{version}"}}'
    )


def _record(m: Metrics, requests: int, seconds: float, state: str | None, version: int = 1):
    for _ in range(requests):
        m.observe_request(
            model="demo", api="predict", entrypoint="GRPC", status="OK", seconds=seconds
        )
    m.observe_batch("demo", 4)
    m.observe_load("/models/demo/1", ok=True)
    m.set_version_state("demo", version, state)
    return m


def test_exposition_parses_with_tf_serving_names_and_types():
    text = _record(Metrics(), 3, 0.001, "AVAILABLE").render()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: f.type for name, f in families.items()} == {
        ":tensorflow:serving:request_count": "counter",
        ":tensorflow:serving:request_latency": "histogram",
        ":tensorflow:serving:batching_session:processed_batch_size": "histogram",
        ":tensorflow:cc:saved_model:load_attempt_count": "counter",
        ":tensorflow:serving:model_version_state": "gauge",
    }
    # TF Serving's sample names: counters without _total, no _created series.
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "_total" not in text and "_created" not in text
    assert _value(text, COUNT) == 3
    assert _value(text, LATENCY_SUM) == pytest.approx(3 * 1000)
    assert _value(text, BATCH_COUNT) == 1
    assert _value(text, LOADS) == 1
    assert _value(text, _state(1, "AVAILABLE")) == 1
    inf = ':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="GRPC",'
    assert _value(text, inf + 'le="+Inf",model_name="demo"}') == 3


def test_version_states_follow_the_manager():
    m = Metrics()
    m.set_version_state("demo", 1, "LOADING")
    assert _value(m.render(), _state(1, "LOADING")) == 0  # 1 only when AVAILABLE
    m.set_version_state("demo", 1, "AVAILABLE")
    m.set_version_state("demo", 2, "AVAILABLE")
    text = m.render()
    assert "LOADING" not in text and _value(text, _state(2, "AVAILABLE")) == 1
    m.set_version_state("demo", 1, None)  # END: unloaded, no longer reported
    assert re.findall(r'model_version_state\{[^}]*version="(\d)"', m.render()) == ["2"]


def test_each_server_has_its_own_registry_and_no_environment_is_set():
    a, b = _record(Metrics(), 2, 0.001, "AVAILABLE"), _record(Metrics(), 5, 0.001, "AVAILABLE")
    assert _value(a.render(), COUNT) == 2 and _value(b.render(), COUNT) == 5
    assert metrics_module.MULTIPROC_ENV not in os.environ


@pytest.fixture
def worker_processes(tmp_path, monkeypatch):
    """Multiprocess mode as a worker process has it, with the process id under the test's
    control: each value written after ``pid[0] = n`` goes to worker n's files."""
    pid = [1001]
    monkeypatch.setenv(metrics_module.MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid[0]))
    return pid


def test_workers_are_summed_and_a_dead_worker_keeps_its_counts(tmp_path, worker_processes):
    _record(Metrics(tmp_path), 3, 0.001, "AVAILABLE")
    worker_processes[0] = 1002
    b = _record(Metrics(tmp_path), 5, 0.002, "LOADING")
    b.set_version_state("demo", 2, "AVAILABLE")
    text = b.render()
    assert text == render_folder(tmp_path)  # any worker reports the whole server
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families[":tensorflow:serving:request_count"].type == "counter"
    assert "_total" not in text and "pid=" not in text
    assert _value(text, COUNT) == 8
    assert _value(text, LATENCY_SUM) == pytest.approx(3 * 1000 + 5 * 2000)
    assert _value(text, BATCH_COUNT) == 2
    assert _value(text, LOADS) == 2
    assert _value(text, _state(1, "AVAILABLE")) == 1  # available in one worker: served
    assert len(re.findall("model_version_state{", text)) == 2

    # Worker 1002 exits: its versions are no longer reported, its counts stay in the sums.
    forget_worker(tmp_path, 1002)
    text = render_folder(tmp_path)
    assert _value(text, COUNT) == 8
    assert re.findall(r'model_version_state\{[^}]*version="(\d)"', text) == ["1"]


def test_shared_metrics_need_the_environment_set_when_the_worker_starts(tmp_path, monkeypatch):
    monkeypatch.delenv(metrics_module.MULTIPROC_ENV, raising=False)
    with pytest.raises(ServingConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(tmp_path)
    assert metrics_module.MULTIPROC_ENV not in os.environ
    # Set after prometheus_client chose its values (at import): refused too, not half-shared.
    monkeypatch.setenv(metrics_module.MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    with pytest.raises(ServingConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(tmp_path)
