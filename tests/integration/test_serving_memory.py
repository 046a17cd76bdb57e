"""medflow.serving.memory: big buffers freed by worker threads are reused instead of faulting again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = """
import resource, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from medflow.serving.memory import keep_freed_memory

pool = ThreadPoolExecutor(4)  # gRPC handlers run in threads: their own malloc arenas

def request():  # what a 6.4 MB Predict allocates: the received buffer, alive while TF copies it
    received = bytes(6_422_528)
    tensor = np.frombuffer(received, np.uint8).copy()
    return tensor.sum()

def faults_per_call():
    for _ in range(5):
        pool.submit(request).result()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        pool.submit(request).result()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20

if sys.argv[1] == "keep":
    assert keep_freed_memory()
print(faults_per_call())
"""


def _faults(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], cwd=REPO, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_keep_freed_memory_stops_page_faults_on_reused_buffers():
    pages = 6_422_528 // 4096  # one fresh 6.4 MB buffer faults in this many pages
    kept = _faults("keep")
    assert kept < 0.1 * pages, kept
    default = _faults("default")
    assert default > kept, (default, kept)
