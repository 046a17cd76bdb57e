"""A label map of a whole DICOM series -> one multi-frame DICOM SEG (highdicom, through
:func:`components.dicom.seg.build_segmentation`): frame k is the label map's slice k on the
series' k-th instance (the order of :class:`components.dicom.volume.SeriesVolume`), so the
SEG's plane positions are the source slices' and it references every source instance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def write_series_seg(out: Path, series, label_map: np.ndarray, result) -> str:
    """Writes ``out/seg-<SeriesInstanceUID>.dcm`` (atomically) for ``label_map`` [slices,
    rows, cols] of ``series``; ``result`` names the model (``model_name``,
    ``model_version``) and the labels (background first)."""
    import pydicom

    from medflow.components.dicom.seg import build_segmentation, seg_bytes
    from medflow.core.files import atomic_write

    slices = [
        _Slice(path, 0, uid, label_map[k], result.model_name, result.model_version, result.labels)
        for k, (path, uid) in enumerate(
            zip(series.source_files, series.sop_instance_uids, strict=True)
        )
    ]
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in series.source_files]
    seg = build_segmentation(slices, sources)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"seg-{series.series_uid}.dcm"
    atomic_write(path, seg_bytes(seg))
    return str(path)


@dataclass
class _Slice:
    """What :func:`components.dicom.seg.build_segmentation` reads of a per-image prediction."""

    path: str
    frame_index: int
    sop_instance_uid: str
    mask: np.ndarray
    model_name: str
    model_version: int
    labels: list[str]
    probabilities: np.ndarray | None = None
