"""Detection results out: PNG overlays (boxes drawn over the source frame) and DICOM SR
measurement reports (TID 1500, one planar ROI per box as an SCOORD POLYLINE referencing the
source image), written to files or stored in the PACS (STOW-RS)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medflow.components.tasks.segmentation.overlays import _stem, display_frame
from medflow.core.files import atomic_write
from medflow.core.tasks import OutputOptions, OutputReport

# Class colours (RGB) in label order, repeating.
COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180))


def overlay_boxes(image: np.ndarray, boxes: Sequence[dict], labels: Sequence[str]) -> np.ndarray:
    """uint8 RGB: ``image`` (grey or RGB) with each box outlined in its class colour, with
    its label and score."""
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    canvas = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    for b in boxes:
        k = list(labels).index(b["label"]) if b["label"] in labels else 0
        colour = COLOURS[k % len(COLOURS)]
        x1, y1 = max(b["x0"], b["x1"] - 1), max(b["y0"], b["y1"] - 1)  # last pixel inside
        draw.rectangle([b["x0"], b["y0"], x1, y1], outline=colour, width=2)
        draw.text((b["x0"] + 2, b["y0"] + 1), f"{b['label']} {b['score']:.2f}", fill=colour)
    return np.asarray(canvas)


def write_overlays(results: Sequence, out_dir: str | Path) -> list[str]:
    """One ``<SOPInstanceUID>_f<frame>.png`` per result (atomic writes); their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        target = out_dir / f"{_stem(r)}.png"
        image = overlay_boxes(display_frame(r.path, r.frame_index), r.boxes, r.labels)
        buf = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buf, format="PNG")
        atomic_write(target, buf.getvalue())
        paths.append(str(target))
    return paths


@dataclass(frozen=True)
class WrittenSR:
    """A box SR written to a file or stored in the PACS."""

    path: str
    study_instance_uid: str
    sop_instance_uid: str
    source_sop_instance_uid: str
    boxes: int
    kind: str = "SR"

    def describe(self) -> str:
        return (
            f"stored SR {self.sop_instance_uid} ({self.boxes} box(es)) of image "
            f"{self.source_sop_instance_uid} in study {self.study_instance_uid}"
        )


def _build(results: Sequence):
    import pydicom

    from medflow.components.tasks.detection.sr import build_box_sr

    for r in results:
        source = pydicom.dcmread(r.path, stop_before_pixels=True)
        yield r, build_box_sr(r, source)


def write_srs(results: Sequence, out_dir: str | Path) -> list[WrittenSR]:
    """One ``sr-<SOPInstanceUID>.dcm`` per result (atomic writes)."""
    from medflow.components.dicom.sr import sr_bytes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for r, sr in _build(results):
        target = out_dir / f"sr-{r.sop_instance_uid}.dcm"
        atomic_write(target, sr_bytes(sr))
        written.append(
            WrittenSR(
                str(target),
                str(sr.StudyInstanceUID),
                str(sr.SOPInstanceUID),
                r.sop_instance_uid,
                len(r.boxes),
            )
        )
    return written


def save_boxes_files(results: list, review_dir: str | Path) -> list:
    """One boxes file per result for review (``medflow predict --record``); the results
    with their ``boxes_ref``."""
    from medflow.components.tasks.detection.review import boxes_file_for, write_boxes_file

    return [
        dataclasses.replace(
            r,
            boxes_ref=str(
                write_boxes_file(
                    boxes_file_for(review_dir, r),
                    r.boxes,
                    r.labels,
                    (r.rows, r.columns),
                    source="model",
                )
            ),
        )  # fmt: skip
        for r in results
    ]


def write_files(results: list, options: OutputOptions) -> tuple[list, OutputReport]:
    """SR files (``sr_out``), overlays (``overlay_out``) and, with ``review_dir``, the boxes
    files the review store judges (each result's ``boxes_ref``)."""
    report = OutputReport()
    if options.review_dir:
        results = save_boxes_files(results, options.review_dir)
    if options.files.get("sr_out"):
        written = write_srs(results, options.files["sr_out"])
        report.json["reports"] = written
        report.lines += [f"wrote DICOM SR {w.path} ({w.boxes} box(es))" for w in written]
    if options.files.get("overlay_out"):
        overlays = write_overlays(results, options.files["overlay_out"])
        report.per_result["overlay"] = overlays
        report.lines.append(f"wrote {len(overlays)} overlay(s) to {options.files['overlay_out']}")
    return results, report


def push_reports(results: Sequence, source, settings: Mapping[str, object]) -> list[WrittenSR]:
    """Store one box SR per image in its study (STOW-RS)."""
    from medflow.components.dicom.sr import sr_bytes

    pushed = []
    for r, sr in _build(results):
        source.store([sr_bytes(sr)], str(sr.StudyInstanceUID))
        pushed.append(
            WrittenSR(
                "",
                str(sr.StudyInstanceUID),
                str(sr.SOPInstanceUID),
                r.sop_instance_uid,
                len(r.boxes),
            )
        )
    return pushed
