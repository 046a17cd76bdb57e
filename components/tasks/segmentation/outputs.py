"""Segmentation results out: DICOM SEG files, PNG overlays, mask files for review, and SEGs
stored in the PACS (STOW-RS)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from medflow.components.dicom.seg import build_segmentations, seg_bytes, write_segmentations
from medflow.components.tasks.segmentation.overlays import save_masks, write_overlays
from medflow.core.tasks import OutputOptions, OutputReport


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

    def describe(self) -> str:
        return (
            f"stored SEG {self.sop_instance_uid} ({self.frames} frame(s)) of series "
            f"{self.source_series_instance_uid} in study {self.study_instance_uid}"
        )


def write_files(results: list, options: OutputOptions) -> tuple[list, OutputReport]:
    """SEG files (``seg_out``), overlays (``overlay_out``) and mask files for review
    (``review_dir``: sets each result's ``mask_ref``)."""
    report = OutputReport()
    seg_type = options.settings.get("seg_type", "binary")
    if options.files.get("seg_out"):
        written, skipped = write_segmentations(results, options.files["seg_out"], seg_type=seg_type)
        report.json["segmentations"] = written
        report.json["segmentations_skipped"] = skipped
        report.lines += [
            f"wrote DICOM SEG {w.path} ({w.segment_type}, {w.frames} frame(s)) for series "
            f"{w.source_series_instance_uid}"
            for w in written
        ]
        report.problems += [f"no DICOM SEG for {s.path}: {s.reason}" for s in skipped]
    if options.files.get("overlay_out"):
        overlays = write_overlays(results, options.files["overlay_out"])
        report.per_result["overlay"] = overlays
        report.lines.append(f"wrote {len(overlays)} overlay(s) to {options.files['overlay_out']}")
    if options.review_dir:
        results = save_masks(results, options.review_dir)
    return results, report


def push_segmentations(
    results: Sequence, source, settings: Mapping[str, object]
) -> list[PushedSeg]:
    """Store one SEG per source series (``seg_type`` binary or fractional) in the PACS."""
    seg_type = str(settings.get("seg_type", "binary"))
    segs, _ = build_segmentations(results, seg_type=seg_type)  # skipped ones get no SEG
    pushed = []
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
    return pushed
