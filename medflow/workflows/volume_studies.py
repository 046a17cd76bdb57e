"""Volume models on PACS studies: ``medflow predict --dicomweb URL --study UID`` with a
volume model fetches the studies (WADO-RS) into a temporary cache, predicts each series as
a volume (:mod:`.predict_volumes`) and, with ``--push``, stores each volume's multi-frame
DICOM SEG in the study it came from (STOW-RS)."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PushedVolumeSeg:
    """A multi-frame SEG of one source series stored in the PACS."""

    study_instance_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    source_series_instance_uid: str
    frames: int
    kind: str = "SEG"

    def describe(self) -> str:
        return (
            f"stored SEG {self.sop_instance_uid} ({self.frames} frame(s)) of series "
            f"{self.source_series_instance_uid} in study {self.study_instance_uid}"
        )


def predict_studies(client, job, source, run) -> tuple:
    """``run(job)`` (the volume predict of a job) on the studies of ``job.study_uids``
    pulled from ``source``; with ``job.push`` the SEG files it wrote are stored back.
    Returns (outcome, pushed)."""
    from medflow.components.dicom.dicomweb import Query
    from medflow.components.dicom.dicomweb_pull import pull

    with tempfile.TemporaryDirectory(prefix="medflow-dicomweb-") as tmp:
        cache = Path(tmp) / "instances"
        pull(source, Query(study_uids=tuple(job.study_uids)), cache)
        files = dict(job.outputs.files)
        if job.push and not files.get("seg_out"):
            files["seg_out"] = str(Path(tmp) / "segs")  # written to be pushed, then removed
        outputs = dataclasses.replace(job.outputs, files=files)
        outcome = run(dataclasses.replace(job, paths=[str(cache)], outputs=outputs))
        pushed = [push_seg(source, path) for path in _seg_files(outcome)] if job.push else []
    return outcome, pushed


def _seg_files(outcome) -> list[str]:
    return [f for r in outcome.results for f in getattr(r, "files", []) if f.endswith(".dcm")]


def push_seg(source, path: str) -> PushedVolumeSeg:
    """Store one SEG file in its study (STOW-RS)."""
    import pydicom

    data = Path(path).read_bytes()
    seg = pydicom.dcmread(path, stop_before_pixels=True)
    source.store([data], str(seg.StudyInstanceUID))
    return PushedVolumeSeg(
        str(seg.StudyInstanceUID),
        str(seg.SOPInstanceUID),
        str(seg.SeriesInstanceUID),
        str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
        int(seg.NumberOfFrames),
    )
