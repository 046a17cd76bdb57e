"""The progress counter of the ingestion pipeline (:mod:`components.ingest.beam_progress`):
bytes appended by the workers become steps of the caller's wrapper while the run goes on,
capped at the number of inputs."""

from __future__ import annotations

import pickle
import threading
import time

from medflow.components.ingest.beam_progress import Ticker, watching


def test_steps_arrive_while_the_block_runs_and_stop_at_the_total(tmp_path):
    path = str(tmp_path / ".progress")
    steps, first_seen = [], threading.Event()

    def progress(it, total):
        for step in it:
            steps.append(step)
            first_seen.set()
            yield step

    ticker = pickle.loads(pickle.dumps(Ticker(path)))  # as a worker gets it
    with watching(progress, 5, path, poll_s=0.01):
        for _ in range(3):
            ticker.tick()
        assert first_seen.wait(5), "no step while the block ran"
        for _ in range(4):  # a retried bundle counts twice: capped at the total
            ticker.tick()
    assert len(steps) == 5


def test_a_run_that_processed_nothing_reports_nothing(tmp_path):
    steps = []
    with watching(lambda it, n: (steps.append(s) or s for s in it), 3, str(tmp_path / "p")):
        time.sleep(0.05)
    assert steps == []


def test_an_unreachable_counter_counts_nothing():
    ticker = Ticker("/nonexistent-folder/.progress")
    ticker.tick()  # no error: a remote worker without the staging folder
    ticker.tick()
