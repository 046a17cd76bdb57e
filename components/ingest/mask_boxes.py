"""Localization labels from segmentation labels: one box per image, the bounding box of the
human mask's foreground (all classes but background), as a ``boxes`` manifest for the
detection task (one class, one box per image).

Reads a mask manifest (``SOPInstanceUID`` key and a ``mask`` column, as ``medflow import-hc18``
and ``medflow import-sunnybrook`` write: PNG/``.npy`` masks, contour files or DICOM SEG,
relative to the manifest's folder) and the DICOM folder it labels (for each instance's
Rows x Columns, which contour files are filled on). Writes ``SOPInstanceUID, boxes`` and the
manifest's other columns, the mask path kept as ``_mask`` (provenance, ignored by ingestion).
An image whose mask is empty or unreadable is left out and counted by reason.

    medflow labels boxes-from-masks OUT/dicom --labels OUT/labels.csv --label head --out boxes.csv
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from medflow.components.dicom.errors import DicomRejected
from medflow.components.dicom.masks import source_mask
from medflow.components.ingest.voc_import import Box, boxes_to_json
from medflow.core.errors import InputError
from medflow.core.files import atomic_write

KEY = "SOPInstanceUID"


@dataclass
class MaskBoxesReport:
    """What a derivation wrote: rows written and rows left out (by reason, and which)."""

    written: int = 0
    left_out: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def dicom_index(folder: str | Path) -> dict[str, Path]:
    """SOPInstanceUID -> file of every DICOM file under ``folder`` (headers only)."""
    index = {}
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        if "SOPInstanceUID" in ds:
            index[str(ds.SOPInstanceUID)] = path
    return index


def mask_box(mask: np.ndarray, label: str) -> Box | None:
    """The bounding box (pixel-edge corners) of the mask's non-zero pixels; None if empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return Box(label, float(cols.min()), float(rows.min()), float(cols.max() + 1),
               float(rows.max() + 1))  # fmt: skip


def boxes_from_masks(
    dicom_dir: str | Path, manifest: str | Path, out: str | Path, label: str
) -> MaskBoxesReport:
    """Writes the ``boxes`` manifest of a mask manifest to ``out`` (atomically).

    Raises:
        InputError: the manifest lacks ``SOPInstanceUID`` or ``mask``, or no row gives a box.
    """
    manifest, out = Path(manifest), Path(out)
    if not label.strip():
        raise InputError("--label: give the class name of the boxes (e.g. head)")
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header, rows = list(reader.fieldnames or []), list(reader)
    except OSError as exc:
        raise InputError(f"--labels {manifest}: cannot read it ({exc.strerror or exc})") from None
    missing = [c for c in (KEY, "mask") if c not in header]
    if missing:
        raise InputError(f"{manifest}: no {' or '.join(missing)} column; pass a mask manifest "
                         "(e.g. from medflow import-hc18)")  # fmt: skip
    index = dicom_index(dicom_dir)
    report, written = MaskBoxesReport(), []
    for i, row in enumerate(rows, start=2):
        where = f"{manifest} line {i}"
        box, reason = _row_box(index, manifest.parent, row, label, where)
        if box is None:
            report.left_out[reason[0]] += 1
            report.problems.append(reason[1])
            continue
        extra = {k: v for k, v in row.items() if k not in (KEY, "mask", "_mask")}
        written.append({KEY: row[KEY], "boxes": boxes_to_json([box]), **extra, "_mask": row["mask"]})  # fmt: skip
    if not written:
        raise InputError(f"{manifest}: no row gave a box ({dict(report.left_out)}); first: "
                         f"{report.problems[0] if report.problems else 'no rows'}")  # fmt: skip
    columns = [KEY, "boxes", *(c for c in header if c not in (KEY, "mask", "_mask")), "_mask"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(written)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, text.getvalue())
    report.written = len(written)
    return report


def _row_box(index, base: Path, row: dict, label: str, where: str):
    """(the row's box, None) or (None, (reason, message))."""
    image = index.get(row[KEY])
    if image is None:
        return None, ("no_image", f"{where}: no DICOM file with SOPInstanceUID {row[KEY]}")
    if not row["mask"]:
        return None, ("no_mask", f"{where}: empty mask cell")
    ds = pydicom.dcmread(image, stop_before_pixels=True)
    try:
        mask = source_mask(ds, base / row["mask"], 0, where)
    except DicomRejected as exc:
        return None, (exc.reason, str(exc))
    box = mask_box(mask, label)
    if box is None:
        return None, ("empty_mask", f"{where}: mask {row['mask']} has no foreground")
    return box, None
