"""Pipeline runs read from ML Metadata: components, states, durations, artifacts, ingest, anomalies.

No Streamlit here: the Runs and Models pages call these functions (cached), tests call them
against a real MLMD store. TFX records each run as a ``pipeline_run`` context; each
component run is an execution attributed to that context and to the component's ``node``
context (named ``<pipeline>.<node_id>``); its outputs are OUTPUT events keyed by output name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Connecting lives in its own module; callers reach it as lineage.open_store etc.
from medflow.dashboard.mlmd_connection import (  # noqa: F401 - re-exported
    config_from_file,
    open_store,
    sqlite_config,
)

RUN_CONTEXT = "pipeline_run"
NODE_CONTEXT = "node"
INGEST_REPORT_TYPE = "medflow.IngestReport"  # components.dicom_example_gen.component
ANOMALIES_TYPE = "ExampleAnomalies"
INGEST_REPORT_FILE = "ingest_report.json"
COUNT_KEYS = ("inputs", "written", "quarantined", "duplicates", "examples")


@dataclass(frozen=True)
class ArtifactInfo:
    """One output artifact of a component run."""

    id: int
    type: str
    key: str  # output name, e.g. "examples"
    uri: str
    state: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class ComponentRun:
    """One execution: a component of a pipeline run."""

    execution_id: int
    node_id: str
    type: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING, NEW, CANCELED, UNKNOWN
    started: datetime
    ended: datetime | None  # None while NEW/RUNNING
    outputs: list[ArtifactInfo] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        return None if self.ended is None else (self.ended - self.started).total_seconds()


@dataclass(frozen=True)
class PipelineRun:
    """A pipeline run (``pipeline_run`` context) and its component runs in start order."""

    run_id: str
    pipeline: str
    started: datetime
    components: list[ComponentRun]

    @property
    def state(self) -> str:
        states = {c.state for c in self.components}
        for worst in ("FAILED", "CANCELED", "RUNNING", "NEW"):
            if worst in states:
                return worst
        return "COMPLETE" if states else "EMPTY"

    @property
    def ended(self) -> datetime | None:
        ends = [c.ended for c in self.components]
        if not ends or any(e is None for e in ends):
            return None
        return max(ends)

    @property
    def duration_s(self) -> float | None:
        end = self.ended
        return None if end is None else (end - self.started).total_seconds()

    def artifacts(self, type_name: str) -> list[ArtifactInfo]:
        return [a for c in self.components for a in c.outputs if a.type == type_name]


@dataclass(frozen=True)
class IngestSummary:
    """What DicomExampleGen made of its inputs: counts, quarantine reasons, quarantined files."""

    uri: str
    counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    quarantined_files: list[dict[str, str]]
    splits: dict[str, Any]
    note: str = ""  # why the JSON report could not be read, if it could not


@dataclass(frozen=True)
class Anomaly:
    """One ExampleValidator finding (tensorflow_metadata ``Anomalies.anomaly_info``)."""

    split: str
    feature: str
    severity: str
    short_description: str
    description: str


# --- reading runs -----------------------------------------------------------------------


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


def _value(value) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "struct_value":
        from google.protobuf import json_format

        return json_format.MessageToDict(value.struct_value)
    if kind == "proto_value":
        return str(value.proto_value.type_url)
    return getattr(value, kind)


def properties(node) -> dict[str, Any]:
    """Properties and custom properties of an artifact/execution/context as plain values."""
    out = {k: _value(v) for k, v in node.properties.items()}
    out.update({k: _value(v) for k, v in node.custom_properties.items()})
    return out


def _state_name(proto_enum, value: int) -> str:
    return proto_enum.Name(value)


def _node_ids(store) -> dict[int, str]:
    """Execution id -> node id, from the ``node`` contexts (``<pipeline>.<node_id>``)."""
    out: dict[int, str] = {}
    for ctx in store.get_contexts_by_type(NODE_CONTEXT):
        node_id = ctx.name.split(".", 1)[1] if "." in ctx.name else ctx.name
        for execution in store.get_executions_by_context(ctx.id):
            out[execution.id] = node_id
    return out


def _pipeline_of(store, run_ctx) -> str:
    parents = store.get_parent_contexts_by_context(run_ctx.id)
    names = [c.name for c in parents if c.type == "pipeline"]
    return names[0] if names else properties(run_ctx).get("pipeline_name", "")


def _outputs(store, execution_ids: list[int]) -> dict[int, list[ArtifactInfo]]:
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    if not execution_ids:
        return {}
    output_types = (mlmd.Event.OUTPUT, mlmd.Event.DECLARED_OUTPUT)
    events = [e for e in store.get_events_by_execution_ids(execution_ids) if e.type in output_types]
    artifacts = {a.id: a for a in store.get_artifacts_by_id({e.artifact_id for e in events})}
    out: dict[int, list[ArtifactInfo]] = {}
    for event in sorted(events, key=lambda e: (e.execution_id, e.artifact_id)):
        art = artifacts.get(event.artifact_id)
        if art is None:
            continue
        key = next((s.key for s in event.path.steps if s.HasField("key")), "")
        out.setdefault(event.execution_id, []).append(
            ArtifactInfo(
                id=art.id,
                type=art.type,
                key=key,
                uri=art.uri,
                state=_state_name(mlmd.Artifact.State, art.state),
                properties=properties(art),
            )
        )
    return out


def list_runs(store, *, limit: int = 20) -> list[PipelineRun]:
    """The newest ``limit`` pipeline runs, newest first, with components and outputs."""
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    contexts = sorted(
        store.get_contexts_by_type(RUN_CONTEXT),
        key=lambda c: (c.create_time_since_epoch, c.id),
        reverse=True,
    )[:limit]
    if not contexts:
        return []
    node_ids = _node_ids(store)
    runs = []
    for ctx in contexts:
        executions = sorted(
            store.get_executions_by_context(ctx.id),
            key=lambda e: (e.create_time_since_epoch, e.id),
        )
        outputs = _outputs(store, [e.id for e in executions])
        components = []
        for e in executions:
            state = _state_name(mlmd.Execution.State, e.last_known_state)
            done = state in ("COMPLETE", "CACHED", "FAILED", "CANCELED")
            components.append(
                ComponentRun(
                    execution_id=e.id,
                    node_id=node_ids.get(e.id) or e.type.rsplit(".", 1)[-1],
                    type=e.type,
                    state=state,
                    started=_time(e.create_time_since_epoch),
                    ended=_time(e.last_update_time_since_epoch) if done else None,
                    outputs=outputs.get(e.id, []),
                )
            )
        runs.append(
            PipelineRun(
                run_id=ctx.name,
                pipeline=_pipeline_of(store, ctx),
                started=_time(ctx.create_time_since_epoch),
                components=components,
            )
        )
    return runs


# --- artifact contents ------------------------------------------------------------------


def _report_path(uri: str) -> Path:
    path = Path(uri)
    return path if path.suffix == ".json" else path / INGEST_REPORT_FILE


def ingest_summary(artifact: ArtifactInfo) -> IngestSummary:
    """Counts and quarantine reasons of an IngestReport artifact.

    The JSON report at ``<uri>/ingest_report.json`` (see ``components.dicom.ingest``) is
    preferred; the artifact's properties (counts) and ``quarantined_<reason>`` custom
    properties are the fallback when the file cannot be read.
    """
    props = artifact.properties
    counts = {k: int(props[k]) for k in COUNT_KEYS if isinstance(props.get(k), int | float)}
    # DicomExampleGen's executor records one quarantined_<reason> custom property per reason.
    reasons = {
        k.removeprefix("quarantined_"): int(v)
        for k, v in sorted(props.items())
        if k.startswith("quarantined_") and isinstance(v, int)
    }
    path = _report_path(artifact.uri)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return IngestSummary(artifact.uri, counts, reasons, [], {}, f"no report at {path}")
    except (OSError, ValueError) as exc:
        return IngestSummary(artifact.uri, counts, reasons, [], {}, f"cannot read {path}: {exc}")
    counts = {**counts, **{k: int(v) for k, v in (report.get("counts") or {}).items()}}
    reasons = {k: int(v) for k, v in (report.get("quarantine_reasons") or reasons).items()}
    files = [
        {k: str(f.get(k, "")) for k in ("path", "reason", "message")}
        for f in report.get("files") or []
        if f.get("status") == "quarantined"
    ]
    return IngestSummary(artifact.uri, counts, reasons, files, report.get("splits") or {})


def load_anomalies(uri: str) -> list[Anomaly]:
    """Anomalies of an ExampleAnomalies artifact, per split (``Split-*/SchemaDiff.pb``)."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    from medflow.components.evaluation_results import read_anomalies

    def anomaly(split: str, feature: str, info) -> Anomaly:
        return Anomaly(
            split=split,
            feature=feature,
            severity=anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
            short_description=info.short_description,
            description=info.description,
        )

    out = []
    for split, anomalies in read_anomalies(uri):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            out.append(anomaly(split, feature, info))
        if anomalies.HasField("dataset_anomaly_info"):
            out.append(anomaly(split, "(dataset)", anomalies.dataset_anomaly_info))
    return out


# --- models: from a pushed version back to its evaluation and blessing --------------------


@dataclass(frozen=True)
class PushLineage:
    """What MLMD knows about a pushed model version: its evaluation, blessing and baseline."""

    run_id: str
    evaluation_uri: str | None
    blessed: bool | None
    blessing: dict[str, Any]


def push_lineage(store, destination: str, version: str) -> PushLineage | None:
    """The Pusher execution that wrote ``destination`` (or version), and its inputs.

    Matches PushedModel artifacts by ``pushed_destination`` (resolved path) or, failing
    that, by ``pushed_version``. Returns None when no push of this version is recorded.
    """
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    target = str(Path(destination).resolve())
    best = None
    for art in store.get_artifacts_by_type("PushedModel"):
        props = properties(art)
        dest = props.get("pushed_destination")
        if dest and str(Path(str(dest)).resolve()) == target:
            best = art
            break
        if best is None and str(props.get("pushed_version", "")) == str(version):
            best = art
    if best is None:
        return None
    events = store.get_events_by_artifact_ids([best.id])
    producers = [e.execution_id for e in events if e.type == mlmd.Event.OUTPUT]
    if not producers:
        return None
    execution_id = producers[-1]
    inputs = [
        e for e in store.get_events_by_execution_ids([execution_id]) if e.type == mlmd.Event.INPUT
    ]
    by_id = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in inputs])}
    keyed = {}
    for e in inputs:
        key = next((s.key for s in e.path.steps if s.HasField("key")), "")
        if e.artifact_id in by_id:
            keyed[key] = by_id[e.artifact_id]
    runs = [c.name for c in store.get_contexts_by_execution(execution_id) if c.type == RUN_CONTEXT]
    evaluation = keyed.get("evaluation")
    blessing_art = keyed.get("model_blessing")
    blessing = properties(blessing_art) if blessing_art is not None else {}
    blessed = None if blessing_art is None else bool(blessing.get("blessed"))
    return PushLineage(
        run_id=runs[0] if runs else "",
        evaluation_uri=evaluation.uri if evaluation is not None else None,
        blessed=blessed,
        blessing=blessing,
    )
