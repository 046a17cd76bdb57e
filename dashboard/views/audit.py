"""Audit page (admins only): read the append-only audit log and export it as CSV."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from medflow.dashboard.config import Settings
from medflow.dashboard.records import ACTIONS, CONFLICT, EVENT_ACTIONS, AuditRecord, User
from medflow.dashboard.store import ReviewStore

COLUMNS = [
    "id",
    "at",
    "actor",
    "action",
    "prediction_id",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "model_name",
    "model_version",
    "outcome",
]


def audit_frame(records: list[AuditRecord]) -> pd.DataFrame:
    """Audit records as a table with ISO-8601 UTC times."""
    rows = [{c: getattr(r, c) for c in COLUMNS} for r in records]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["at"] = [r.at.isoformat() for r in records]
    return frame


def show(settings: Settings, store: ReviewStore, user: User) -> None:
    """Renders the audit log for admins; refuses everyone else."""
    st.title("Audit log")
    if user.role != "admin":
        st.error("The audit log is for admins only.")
        return
    cols = st.columns(2)
    actor = cols[0].text_input("Who (exact user name)", key="audit_actor").strip() or None
    actions = ["all", "view", *ACTIONS, CONFLICT, *EVENT_ACTIONS]
    action = cols[1].selectbox("Action", actions, key="audit_action")
    records = store.audit_records(actor=actor, action=None if action == "all" else action)
    frame = audit_frame(records)
    st.caption(f"{len(frame)} record(s), newest first. The log is append-only.")
    st.download_button(
        "Export CSV",
        frame.to_csv(index=False).encode("utf-8"),
        file_name="medflow-audit.csv",
        mime="text/csv",
        key="audit_export",
    )
    st.dataframe(frame, hide_index=True, width="stretch")
