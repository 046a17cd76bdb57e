"""Boxes at ingestion (:meth:`DetectionTask.ingest_labels`): a manifest ``boxes`` cell is
either the JSON list of ``{label, x0, y0, x1, y1}`` in source pixels, or the path (relative to
the manifest's folder) of a DICOM SR measurement report (TID 1500) whose planar ROIs are the
image's boxes, as ``medflow predict --sr-out`` writes them or a reader's SR from the PACS.

Either way the boxes are checked on the instance's own grid before any example is written: a
malformed cell, an unreadable SR, an SR without planar ROIs or about another image, a
zero-area box or one outside the image (beyond :data:`EDGE_TOLERANCE` pixels; corners within
it are clipped) quarantines the file with reason ``label_invalid`` and a message naming the
file, the manifest line and the column. The examples carry the boxes as the JSON cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medflow.components.ingest.voc_import import (
    Box,
    box_problem,
    boxes_to_json,
    clip_box,
    parse_boxes,
)
from medflow.core.errors import InputError

COLUMN = "boxes"


def ingest_boxes(labels: Mapping[str, Any], image, base: str, where: str) -> dict[str, Any]:
    """``labels`` with the ``boxes`` cell checked (and read from its SR when it names one).

    Raises:
        InputError: naming ``where`` and the column (see the module).
    """
    cell = str(labels.get(COLUMN, "")).strip()
    where = f"{where}, column {COLUMN}"
    if cell.startswith("["):
        boxes = parse_boxes(cell, where)
    else:
        boxes = boxes_from_sr(Path(base) / cell, image, where)
    rows, cols = int(image.Rows), int(image.Columns)
    return {**labels, COLUMN: boxes_to_json(_on_image(boxes, rows, cols, where))}


def boxes_from_sr(path: Path, image, where: str) -> list[Box]:
    """The boxes of the SR at ``path``, which must be about ``image``."""
    import pydicom

    from medflow.components.tasks.detection.sr import read_box_sr

    try:
        sr = pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(
            f"{where}: {path} is neither a JSON list of boxes nor a readable DICOM SR ({exc}); "
            "fix the cell"
        ) from None
    uid, boxes = read_box_sr(sr, f"{where}: SR {path}")
    if uid != str(image.SOPInstanceUID):
        raise InputError(
            f"{where}: SR {path} holds the boxes of image {uid}, not of this one "
            f"({image.SOPInstanceUID}); name the SR of this image"
        )
    return [Box(b["label"], *(b[k] for k in ("x0", "y0", "x1", "y1"))) for b in boxes]


def _on_image(boxes: list[Box], rows: int, cols: int, where: str) -> list[Box]:
    """The boxes clipped to the image; a zero-area box or one outside it is an error."""
    for i, b in enumerate(boxes):
        problem = box_problem(b, rows, cols)
        if problem:
            what = f"{where}: box {i} ({b.label} x0={b.x0:g} y0={b.y0:g} x1={b.x1:g} y1={b.y1:g})"
            said = {"zero_area": "has no area (x1 <= x0 or y1 <= y0)",
                    "out_of_image": f"is outside the {cols}x{rows} image"}[problem]  # fmt: skip
            raise InputError(f"{what} {said}; fix or remove it")
    return [clip_box(b, rows, cols) for b in boxes]
