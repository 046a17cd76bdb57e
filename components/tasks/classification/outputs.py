"""Classification results back to the PACS: one DICOM SR per study (STOW-RS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medflow.components.dicom.reader import read_dicom
from medflow.components.dicom.sr import build_prediction_sr, sr_bytes


@dataclass(frozen=True)
class PushedSR:
    """An SR stored in the PACS."""

    study_instance_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    findings: int
    kind: str = "SR"

    def describe(self) -> str:
        return (
            f"stored SR {self.sop_instance_uid} ({self.findings} finding(s)) in study "
            f"{self.study_instance_uid}"
        )


def push_reports(results: Sequence, source) -> list[PushedSR]:
    """Store one SR per study of ``results`` (their source files are still on disk)."""
    sources = {r.path: read_dicom(r.path) for r in results}
    pushed = []
    for study in dict.fromkeys(r.study_instance_uid for r in results):
        preds = [r for r in results if r.study_instance_uid == study]
        sr = build_prediction_sr(preds, [sources[r.path] for r in preds])
        source.store([sr_bytes(sr)], study)
        pushed.append(
            PushedSR(study, str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID), len(preds))
        )
    return pushed
