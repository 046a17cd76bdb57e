"""Runs page: pipeline runs from ML Metadata with components, durations, artifacts, ingest, anomalies.

Reads are cached; a local SQLite store's cache key is its modification time and size, so a
new run (which writes to the file) shows on the next rerun. Stores reached over the network
(MySQL, gRPC) are re-read at most every ``REMOTE_TTL_S`` seconds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from medflow.core.errors import MedflowError
from medflow.dashboard import lineage
from medflow.dashboard.config import Settings
from medflow.dashboard.records import User
from medflow.dashboard.store import ReviewStore

REMOTE_TTL_S = 30


def sqlite_stamp(path: str | Path) -> tuple[int, int]:
    """Cache key of a SQLite file: changes when a run writes to it."""
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


@st.cache_data(show_spinner="Reading ML Metadata…", max_entries=16)
def runs_from_sqlite(
    path: str, stamp: tuple[int, int], limit: int = 20
) -> list[lineage.PipelineRun]:
    return lineage.list_runs(lineage.open_store(lineage.sqlite_config(path)), limit=limit)


@st.cache_data(show_spinner="Reading ML Metadata…", max_entries=4)
def runs_from_config(path: str, time_bucket: int, limit: int = 20) -> list[lineage.PipelineRun]:
    store = lineage.open_store(lineage.config_from_file(path))
    return lineage.list_runs(store, limit=limit)


@st.cache_data(show_spinner=False, max_entries=64)
def _ingest(uri: str, _artifact: lineage.ArtifactInfo) -> lineage.IngestSummary:
    return lineage.ingest_summary(_artifact)  # keyed on the URI: artifacts are immutable


@st.cache_data(show_spinner=False, max_entries=64)
def _anomalies(uri: str) -> list[lineage.Anomaly]:
    return lineage.load_anomalies(uri)


def load_runs(settings: Settings) -> tuple[list[lineage.PipelineRun], str | None]:
    """Runs of every configured store, newest first, and a message when there are none."""
    if settings.mlmd_config:
        bucket = int(time.time() // REMOTE_TTL_S)
        return runs_from_config(settings.mlmd_config, bucket), None
    files = settings.mlmd_sqlite_files()
    if not files:
        return [], (
            f"No pipeline runs yet: no ML Metadata at {settings.mlmd_where()}. Run the pipeline "
            "(`make run` or `medflow run`), or point the dashboard at its work folder with "
            "`medflow dashboard --workdir DIR`."
        )
    runs = []
    for path in files.values():
        runs.extend(runs_from_sqlite(str(path), sqlite_stamp(path)))
    runs.sort(key=lambda r: r.started, reverse=True)
    return runs, None if runs else f"No pipeline runs recorded in {settings.mlmd_where()}."


def _fmt_s(seconds: float | None) -> str:
    return "running" if seconds is None else f"{seconds:.1f} s"


def runs_table(runs: list[lineage.PipelineRun]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": [r.run_id for r in runs],
            "pipeline": [r.pipeline for r in runs],
            "state": [r.state for r in runs],
            "started (UTC)": [r.started.strftime("%Y-%m-%d %H:%M:%S") for r in runs],
            "duration": [_fmt_s(r.duration_s) for r in runs],
            "components": [len(r.components) for r in runs],
        }
    )


def components_table(run: lineage.PipelineRun) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "component": [c.node_id for c in run.components],
            "state": [c.state for c in run.components],
            "started (UTC)": [c.started.strftime("%H:%M:%S") for c in run.components],
            "duration (s)": [c.duration_s for c in run.components],
            "type": [c.type for c in run.components],
            "execution": [c.execution_id for c in run.components],
        }
    )


def artifacts_table(run: lineage.PipelineRun) -> pd.DataFrame:
    rows = [
        {"component": c.node_id, "output": a.key, "type": a.type, "state": a.state, "uri": a.uri}
        for c in run.components
        for a in c.outputs
    ]
    return pd.DataFrame(rows, columns=["component", "output", "type", "state", "uri"])


def show(settings: Settings, store: ReviewStore, user: User) -> None:
    """Renders the Runs page."""
    st.title("Pipeline runs")
    try:
        runs, message = load_runs(settings)
    except MedflowError as exc:
        st.error(str(exc))
        return
    if not runs:
        st.info(message)
        return
    st.caption(f"{len(runs)} run(s) in {settings.mlmd_where()}, newest first.")
    st.dataframe(runs_table(runs), hide_index=True, width="stretch")
    labels = {f"{r.pipeline} · {r.run_id}": r for r in runs}
    run = labels[st.selectbox("Run", list(labels), key="runs_run")]
    failed = [c.node_id for c in run.components if c.state == "FAILED"]
    if failed:
        st.error(f"Run {run.run_id} failed in {', '.join(failed)}.")
    st.subheader("Components")
    st.dataframe(components_table(run), hide_index=True, width="stretch")
    durations = {c.node_id: c.duration_s for c in run.components if c.duration_s is not None}
    if durations:
        st.bar_chart(pd.Series(durations, name="seconds"), horizontal=True, height=240)
    st.subheader("Artifacts")
    st.dataframe(artifacts_table(run), hide_index=True, width="stretch")
    _ingest_section(run)
    _anomalies_section(run)


def _ingest_section(run: lineage.PipelineRun) -> None:
    reports = run.artifacts(lineage.INGEST_REPORT_TYPE)
    if not reports:
        return
    st.subheader("Ingest")
    summary = _ingest(reports[0].uri, reports[0])
    if summary.note:
        st.warning(summary.note)
    keys = [k for k in lineage.COUNT_KEYS if k in summary.counts]
    for col, key in zip(st.columns(max(len(keys), 1)), keys, strict=False):
        col.metric(key, summary.counts[key])
    if not summary.quarantine_reasons:
        st.success("No input was quarantined.")
        return
    from medflow.components.dicom.errors import REASONS

    st.markdown("**Quarantine reasons**")
    st.dataframe(
        pd.DataFrame(
            {
                "reason": list(summary.quarantine_reasons),
                "files": list(summary.quarantine_reasons.values()),
                "meaning": [REASONS.get(r, "") for r in summary.quarantine_reasons],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    if summary.quarantined_files:
        with st.expander(f"Quarantined files ({len(summary.quarantined_files)})"):
            st.dataframe(pd.DataFrame(summary.quarantined_files), hide_index=True, width="stretch")


def _anomalies_section(run: lineage.PipelineRun) -> None:
    artifacts = run.artifacts(lineage.ANOMALIES_TYPE)
    if not artifacts:
        return
    st.subheader("Data anomalies (ExampleValidator)")
    found = _anomalies(artifacts[0].uri)
    if not found:
        st.success("ExampleValidator found no anomalies.")
        return
    st.warning(f"{len(found)} anomal{'y' if len(found) == 1 else 'ies'} against the schema.")
    st.dataframe(pd.DataFrame([a.__dict__ for a in found]), hide_index=True, width="stretch")
