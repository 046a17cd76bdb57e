"""DICOM files -> model input with the ingestion preprocessing (components.dicom.pixels)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medflow.components.dicom.errors import DicomRejected
from medflow.components.dicom.pixels import Geometry, pixel_spacing, to_model_input
from medflow.components.dicom.reader import ReadLimits, read_dicom
from medflow.core.errors import InputError


@dataclass(frozen=True)
class Rejected:
    """A file that could not be turned into model input."""

    path: str
    reason: str
    message: str


@dataclass(frozen=True)
class ModelInput:
    """One frame ready for the model, with the original UIDs of its file."""

    path: str
    frame_index: int
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    array: np.ndarray
    # Where the array came from (to map per-pixel outputs back onto the source image grid).
    geometry: Geometry | None = None
    source_spacing: tuple[float, float] | None = None  # (row, col) mm of the source pixels


def load_inputs(files: list[Path], spec) -> tuple[list[ModelInput], list[Rejected]]:
    """Read each file once (safe reader), preprocess its frames, keep the original UIDs.

    Returns:
        (inputs, rejected files) — a bad file is reported, not fatal.
    """
    inputs: list[ModelInput] = []
    rejected: list[Rejected] = []
    limits = ReadLimits(max_pixels=spec.max_pixels)
    for path in files:
        try:
            ds = read_dicom(path, limits)
            frames = to_model_input(ds, spec, str(path))
        except DicomRejected as exc:
            rejected.append(Rejected(str(path), exc.reason, exc.message))
            continue
        uids = [
            str(ds.get(k, "")) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        ]
        spacing = pixel_spacing(ds)
        for array, geometry in frames:
            inputs.append(
                ModelInput(
                    str(path.resolve()), geometry.frame_index, *uids, array, geometry, spacing
                )
            )
    return inputs, rejected


def dicom_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files given directly, plus every non-hidden file under given folders (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path} does not exist; pass DICOM files or folders")
    return files
