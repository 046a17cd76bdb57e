"""Predict on studies pulled from a PACS over DICOMweb and push the results back: a DICOM SR
of classifications per study, a DICOM SEG of segmentations per source series."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PushedSR:
    """An SR stored in the PACS."""

    study_instance_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    findings: int
    kind: str = "SR"


@dataclass(frozen=True)
class PushedSeg:
    """A DICOM SEG stored in the PACS (one per source series)."""

    study_instance_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    source_series_instance_uid: str
    frames: int
    segment_type: str
    kind: str = "SEG"


def predict_studies(
    client,
    source,
    study_uids: Sequence[str],
    model: str,
    *,
    version: int | None = None,
    label: str | None = None,
    contract: str | Path | None = None,
    batch_size: int = 32,
    push: bool = False,
    seg_type: str = "binary",
    local: Callable[[list], list] | None = None,
) -> tuple[list, list, list[PushedSR] | list[PushedSeg]]:
    """Fetch the studies (WADO-RS), predict with ``client`` (TF Serving API) and, with
    ``push``, store the results (STOW-RS): one SR per study of a classification model, one
    SEG (``seg_type`` binary or fractional) per source series of a segmentation model.

    Instances are read with the same safe reader as files; a prediction's ``path`` is
    ``<DICOMweb URL>/studies/<study>/series/<series>/instances/<sop>``.

    Args:
        local: called with the predictions while their instances are still in the local
            cache (paths are files), e.g. to write SEG files or overlays; returns the
            predictions to go on with.

    Returns:
        (predictions, rejected instances, pushed SRs or SEGs).
    """
    from medflow.components.dicom.dicomweb import Query
    from medflow.components.dicom.dicomweb_pull import pull
    from medflow.components.dicom.reader import read_dicom
    from medflow.components.dicom.sr import build_prediction_sr, sr_bytes

    with tempfile.TemporaryDirectory(prefix="medflow-dicomweb-") as tmp:
        cache = Path(tmp) / "instances"
        pull(source, Query(study_uids=tuple(study_uids)), cache)
        results, rejected = client.predict_dicom(
            [cache], model, version=version, label=label, contract=contract, batch_size=batch_size
        )
        if local is not None:
            results = local(results)
        segmentation = any(getattr(r, "task", "") == "segmentation" for r in results)
        pushed: list = []
        if push and segmentation:
            from medflow.components.dicom.seg import build_segmentations, seg_bytes

            segs, _ = build_segmentations(results, seg_type=seg_type)  # skipped: no SEG
            for seg, _ in segs:
                source.store([seg_bytes(seg)], str(seg.StudyInstanceUID))
                pushed.append(
                    PushedSeg(
                        str(seg.StudyInstanceUID),
                        str(seg.SOPInstanceUID),
                        str(seg.SeriesInstanceUID),
                        str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
                        int(seg.NumberOfFrames),
                        seg_type,
                    )
                )
        elif push:
            sources = {r.path: read_dicom(r.path) for r in results}
            for study in dict.fromkeys(r.study_instance_uid for r in results):
                preds = [r for r in results if r.study_instance_uid == study]
                sr = build_prediction_sr(preds, [sources[r.path] for r in preds])
                source.store([sr_bytes(sr)], study)
                pushed.append(
                    PushedSR(study, str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID), len(preds))
                )
        results = [dataclasses.replace(r, path=_url(source.url, r)) for r in results]
        rejected = [dataclasses.replace(r, path=Path(r.path).name) for r in rejected]
    return results, rejected, pushed


def _url(base: str, r) -> str:
    return (
        f"{base}/studies/{r.study_instance_uid}/series/{r.series_instance_uid}"
        f"/instances/{r.sop_instance_uid}"
    )
