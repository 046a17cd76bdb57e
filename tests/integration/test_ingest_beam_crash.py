"""A file that kills the process decoding it, under DirectRunner multi-processing (issue 25):
Beam 2.x's runner waits forever for the answer of an SDK worker that died (Beam issue
#19674), so the per-file step decodes in a child process of the Beam worker there; the file
is quarantined as ``worker_crashed``, the others are written, and the run ends in bounded
time with nothing half-written in the output folder.

The fault is injected with the workers' test hook (``MEDFLOW_TEST_KILL_WORKER_ON``: the
process processing that file SIGKILLs itself, as an OOM kill or a decoder's segfault would),
through ``medflow ingest`` in a subprocess, so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from medflow.components.ingest.npz_import import import_npz
from medflow.components.ingest.workers import KILL_ON_ENV

BOUND_S = 240  # a hang is a failure, not a stuck suite (the run takes ~15-40 s here)


@pytest.mark.slow
def test_a_file_that_kills_its_process_is_quarantined_under_multi_processing(shared_data, tmp_path):
    import_npz(shared_data / "breastmnist.npz", tmp_path / "npz", limit=3)
    src = tmp_path / "npz" / "dicom"
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.dcm"))
    assert len(files) >= 4
    marked = files[1]
    key = tmp_path / "deid.key"
    key.write_text("a-test-key-0123456789")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "medflow.cli", "ingest", str(src), "--out", str(out)]
    argv += ["--deid-key-file", str(key), "--beam-arg=--runner=DirectRunner"]
    argv += ["--beam-arg=--direct_running_mode=multi_processing"]
    argv += ["--beam-arg=--direct_num_workers=2"]
    env = dict(os.environ, **{KILL_ON_ENV: marked})
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=BOUND_S)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "ingest_report.json").read_text())
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path[marked]["status"] == "quarantined"
    assert by_path[marked]["reason"] == "worker_crashed"
    assert report["counts"]["inputs"] == len(files)
    assert report["counts"]["written"] == len(files) - 1
    left = [p.name for p in out.rglob("*") if p.name.startswith(".")]
    assert left == []  # no staging folder, temporary shard or key file left behind
    print(f"ended in {elapsed:.1f} s")
