"""After a local run was killed (kill -9, power loss): what it left in ML Metadata and on
disk is closed before the next run starts.

LocalDagRunner records an execution as RUNNING and its outputs as PENDING artifacts while a
component works; a killed process never finishes either. Left alone, ML Metadata shows a
component running forever and a half-written ``Trainer/model/N`` stays beside the real
outputs. The next run (holding the work folder's lock, so no other run is live) marks such
executions FAILED and their PENDING outputs ABANDONED, and deletes those outputs' files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from medflow.core.errors import ConfigError

RECOVERED = "medflow_recovered"  # custom property on what was closed this way


@dataclass(frozen=True)
class Recovered:
    """What :func:`close_interrupted_runs` closed."""

    executions: tuple[int, ...]
    artifacts: tuple[int, ...]
    removed: tuple[str, ...]


@contextlib.contextmanager
def run_lock(lock_file: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``lock_file`` for one run of a pipeline in a work folder.

    Raises:
        ConfigError: another run of the same pipeline holds it.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another run of this pipeline is using its work folder ({lock_file}); wait "
                "for it to finish, or pass another --workdir"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def close_interrupted_runs(store) -> Recovered:
    """Marks RUNNING executions FAILED and their PENDING outputs ABANDONED, and removes
    those outputs' files (call it only while holding :func:`run_lock`)."""
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    running = [e for e in store.get_executions() if e.last_known_state == mlmd.Execution.RUNNING]
    if not running:
        return Recovered((), (), ())
    outputs = {
        ev.artifact_id
        for ev in store.get_events_by_execution_ids([e.id for e in running])
        if ev.type in (mlmd.Event.OUTPUT, mlmd.Event.PENDING_OUTPUT)
    }
    pending = [
        a for a in store.get_artifacts_by_id(sorted(outputs)) if a.state == mlmd.Artifact.PENDING
    ]
    removed = []
    for artifact in pending:
        if artifact.uri and os.path.exists(artifact.uri):
            shutil.rmtree(artifact.uri, ignore_errors=True)
            removed.append(artifact.uri)
        artifact.state = mlmd.Artifact.ABANDONED
        artifact.custom_properties[RECOVERED].bool_value = True
    for execution in running:
        execution.last_known_state = mlmd.Execution.FAILED
        execution.custom_properties[RECOVERED].bool_value = True
    if pending:
        store.put_artifacts(pending)
    store.put_executions(running)
    return Recovered(tuple(e.id for e in running), tuple(a.id for a in pending), tuple(removed))
