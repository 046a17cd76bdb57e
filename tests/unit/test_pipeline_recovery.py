"""After a killed run (issue 23, item 8): the next run closes what was left RUNNING in ML
Metadata and removes its partial outputs, and two runs never share a work folder."""

from __future__ import annotations

import pytest
from ml_metadata.proto import metadata_store_pb2 as mlmd

from medflow.core.errors import ConfigError
from medflow.pipelines.recovery import RECOVERED, close_interrupted_runs, run_lock
from medflow.pipelines.run_summary import metadata_store


def _killed_trainer(store, root):
    """What LocalDagRunner leaves when the Trainer is killed: a RUNNING execution and its
    PENDING model artifact with a half-written folder; plus an earlier, finished one."""
    etype = store.put_execution_type(mlmd.ExecutionType(name="Trainer"))
    atype = store.put_artifact_type(mlmd.ArtifactType(name="Model"))
    done_dir, partial_dir = root / "Trainer" / "model" / "1", root / "Trainer" / "model" / "2"
    for folder in (done_dir, partial_dir):
        (folder / "Format-Serving").mkdir(parents=True)
        (folder / "Format-Serving" / "saved_model.pb").write_bytes(b"x")
    done = mlmd.Artifact(type_id=atype, uri=str(done_dir), state=mlmd.Artifact.LIVE)
    partial = mlmd.Artifact(type_id=atype, uri=str(partial_dir), state=mlmd.Artifact.PENDING)
    ids = store.put_artifacts([done, partial])
    finished = mlmd.Execution(type_id=etype, last_known_state=mlmd.Execution.COMPLETE)
    killed = mlmd.Execution(type_id=etype, last_known_state=mlmd.Execution.RUNNING)
    exec_ids = store.put_executions([finished, killed])
    store.put_events(
        [
            mlmd.Event(artifact_id=ids[0], execution_id=exec_ids[0], type=mlmd.Event.OUTPUT),
            mlmd.Event(
                artifact_id=ids[1], execution_id=exec_ids[1], type=mlmd.Event.PENDING_OUTPUT
            ),
        ]
    )
    return exec_ids, ids, done_dir, partial_dir


def test_a_killed_execution_is_closed_and_its_partial_output_removed(tmp_path):
    store = metadata_store(tmp_path / "metadata.sqlite")
    (finished, killed), (done_id, partial_id), done_dir, partial_dir = _killed_trainer(
        store, tmp_path / "pipeline"
    )

    recovered = close_interrupted_runs(store)

    assert recovered.executions == (killed,) and recovered.artifacts == (partial_id,)
    assert recovered.removed == (str(partial_dir),) and not partial_dir.exists()
    assert (done_dir / "Format-Serving" / "saved_model.pb").is_file()  # finished output kept
    states = {e.id: e for e in store.get_executions()}
    assert states[killed].last_known_state == mlmd.Execution.FAILED
    assert states[killed].custom_properties[RECOVERED].bool_value
    assert states[finished].last_known_state == mlmd.Execution.COMPLETE
    artifacts = {a.id: a.state for a in store.get_artifacts()}
    assert artifacts == {done_id: mlmd.Artifact.LIVE, partial_id: mlmd.Artifact.ABANDONED}
    assert close_interrupted_runs(store).executions == ()  # nothing left to close


def test_two_runs_never_share_a_work_folder(tmp_path):
    lock = tmp_path / "metadata" / "p.lock"
    with run_lock(lock):
        with pytest.raises(ConfigError, match="another run of this pipeline"):
            with run_lock(lock):
                pass
    with run_lock(lock):  # released when the first run ended
        pass
