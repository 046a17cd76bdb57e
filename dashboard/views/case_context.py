"""What a reviewer needs to know about a case's image besides its pixels, pseudonymised.

Patient, study and series appear as short stable pseudonyms (``P-3F9A1C``: an HMAC of the
original identifier under the review store's secret key, so the same patient reads the same
across cases and sessions but the identifier cannot be read back), with the modality, body
part, series description and number from the DICOM header. The full UIDs stay available in
a collapsed details line. The pixel spacing gives measurements in mm.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
from dataclasses import dataclass

import streamlit as st

from medflow.components.dicom.reader import read_dicom
from medflow.dashboard.records import Prediction


@dataclass(frozen=True)
class Header:
    """The few header fields the case panel shows (empty strings when absent)."""

    patient_id: str
    modality: str
    body_part: str
    series_description: str
    series_number: str
    spacing: tuple[float, float] | None  # (row, column) mm


@st.cache_data(show_spinner=False, max_entries=64)
def _header(path: str, mtime: float) -> Header | None:  # mtime: re-read when the file changes
    try:
        ds = read_dicom(path)
    except Exception:  # noqa: BLE001 - the viewer already says why the file cannot be shown
        return None
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        pair = (float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else None
    except (TypeError, ValueError):
        pair = None
    return Header(
        patient_id=str(ds.get("PatientID", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        body_part=str(ds.get("BodyPartExamined", "") or ""),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        series_number=str(ds.get("SeriesNumber", "") or ""),
        spacing=pair if pair and all(v > 0 for v in pair) else None,
    )


def header(pred: Prediction) -> Header | None:
    """The case image's header fields (cached), or None when it cannot be read."""
    path = pred.image_ref
    if not os.path.isfile(path):
        return None
    return _header(path, os.path.getmtime(path))


def pseudonym(key: bytes, prefix: str, value: str) -> str:
    """A short stable pseudonym of an identifier (``prefix`` + 6 hex digits)."""
    if not value:
        return f"{prefix}-unknown"
    digest = hmac.new(key, f"{prefix}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"{prefix}-{digest[:6].upper()}"


def context_markdown(key: bytes, pred: Prediction, head: Header | None) -> str:
    """One short block: patient, study, series pseudonyms and what the image is."""
    patient = pseudonym(key, "P", head.patient_id if head else "")
    what = ", ".join(
        html.escape(v)
        for v in (
            head.modality if head else "",
            head.body_part.lower() if head else "",
            head.series_description if head else "",
        )
        if v
    )
    series_no = f" #{html.escape(head.series_number)}" if head and head.series_number else ""
    return (
        f"**Patient** {patient} · **Study** {pseudonym(key, 'ST', pred.study_instance_uid)} · "
        f"**Series** {pseudonym(key, 'SE', pred.series_instance_uid)}{series_no}  \n"
        f"{what or 'modality unknown'} · frame {pred.frame_index + 1} · "
        f"**Model** {html.escape(pred.model_name)} v{html.escape(pred.model_version)}"
    )
