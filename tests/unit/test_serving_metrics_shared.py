"""Metrics of several worker processes: summed when any of them is scraped."""

from __future__ import annotations

import os
import re
import time

from medflow.serving.metrics import Metrics, SharedMetrics


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([\d.e+]+)$", text, re.M)
    assert match, f"{series} not in\n{text}"
    return float(match.group(1))


def _worker(requests: int, seconds: float, version_state: str, version: int = 1) -> Metrics:
    m = Metrics()
    for _ in range(requests):
        m.observe_request(
            model="demo", api="predict", entrypoint="GRPC", status="OK", seconds=seconds
        )
    m.observe_batch("demo", 4)
    m.observe_load("/models/demo/1", ok=True)
    m.set_version_state("demo", version, version_state)
    return m


def test_render_sums_counters_and_histograms_of_other_workers():
    a, b = _worker(3, 0.001, "AVAILABLE"), _worker(5, 0.002, "LOADING")
    text = a.render([b.snapshot()])
    count = ':tensorflow:serving:request_count{entrypoint="GRPC",model_name="demo",status="OK"}'
    assert _value(text, count) == 8
    latency = (
        ':tensorflow:serving:request_latency_sum{API="predict",entrypoint="GRPC",model_name="demo"}'
    )
    assert _value(text, latency) == 3 * 1000 + 5 * 2000
    assert (
        _value(
            text,
            ':tensorflow:serving:batching_session:processed_batch_size_count{model_name="demo"}',
        )
        == 2
    )
    assert (
        _value(
            text,
            ':tensorflow:cc:saved_model:load_attempt_count{model_path="/models/demo/1",status="success"}',
        )
        == 2
    )
    state = (
        ':tensorflow:serving:model_version_state{model_name="demo",state="AVAILABLE",version="1"}'
    )
    assert _value(text, state) == 1  # available in one worker: served
    assert _value(a.render(), count) == 3


def test_shared_metrics_publish_and_read_peers(tmp_path):
    a, b = _worker(2, 0.001, "AVAILABLE"), _worker(7, 0.001, "AVAILABLE", version=2)
    share_a = SharedMetrics(a, tmp_path, interval_s=0.05, name="a").start()
    share_b = SharedMetrics(b, tmp_path, interval_s=0.05, name="b").start()
    try:
        count = ':tensorflow:serving:request_count{entrypoint="GRPC",model_name="demo",status="OK"}'
        assert _value(a.render(), count) == 9 == _value(b.render(), count)
        assert len(re.findall("model_version_state{", a.render())) == 2
        b.observe_request(model="demo", api="predict", entrypoint="GRPC", status="OK", seconds=0.1)
        time.sleep(0.3)  # b publishes every 50 ms
        assert _value(a.render(), count) == 10
    finally:
        share_b.stop()
        share_a.stop()
    # A worker that is gone keeps counting (counters never go down) but no longer reports
    # model versions once its file is stale.
    old = time.time() - 10
    os.utime(tmp_path / "worker-b.json", (old, old))
    text = a.render()
    assert _value(text, count) == 10
    assert re.findall(r'model_version_state\{[^}]*version="(\d)"', text) == ["1"]


def test_a_half_written_peer_file_is_skipped(tmp_path):
    a = _worker(1, 0.001, "AVAILABLE")
    (tmp_path / "worker-x.json").write_text('{"requests": [[')
    share = SharedMetrics(a, tmp_path, name="a").start()
    try:
        count = ':tensorflow:serving:request_count{entrypoint="GRPC",model_name="demo",status="OK"}'
        assert _value(a.render(), count) == 1
    finally:
        share.stop()
