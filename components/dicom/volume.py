"""DICOM series -> 3D volume: group instances by series (and by stack inside a series),
sort them along the slice normal, check the geometry, and keep the world affine (LPS).

The geometry checks are ours, because a quarantine needs a reason a person can act on
("missing 2 slices between 13.0 and 32.5 mm"); the voxel array and its affine come from
highdicom's volume API (``highdicom.get_volume_from_series`` for a series of single-frame
instances, ``highdicom.Image.get_volume`` for an Enhanced multi-frame instance), which
applies the modality transform and builds the affine in the DICOM (LPS) convention with
index order (slice, row, column).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from medflow.core.errors import InputError

# Why a series did not become a volume (stable codes; reports count them).
VOLUME_REASONS = {
    "mixed_orientation": "instances of one series lie in differently oriented planes",
    "mixed_grid": "instances differ in rows x columns or pixel spacing",
    "mixed_frame_of_reference": "instances carry different FrameOfReferenceUIDs",
    "no_geometry": "an instance lacks ImagePositionPatient / ImageOrientationPatient / PixelSpacing",
    "duplicate_slices": "two instances share one slice position",
    "missing_slices": "a gap of whole slices along the slice normal",
    "uneven_spacing": "slice positions are not evenly spaced",
    "too_few_slices": "fewer than two slices: not a volume",
    "not_dicom": "a file among the series that is not readable DICOM (left out)",
}
# Relative tolerance on slice steps, and absolute tolerance on orientation cosines.
STEP_RTOL = 0.05
ORIENTATION_ATOL = 1e-3


class VolumeRejected(InputError):
    """A series that cannot become a volume; carries a reason code (:data:`VOLUME_REASONS`)."""

    def __init__(self, reason: str, message: str):
        if reason not in VOLUME_REASONS:
            raise ValueError(f"unknown volume reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class SeriesVolume:
    """One assembled volume: voxels (slice, row, column) and the LPS affine mapping the
    index (k, i, j, 1) to patient coordinates in mm."""

    series_uid: str
    voxels: np.ndarray
    affine: np.ndarray
    frame_of_reference_uid: str
    modality: str
    source_files: list[str]
    sop_instance_uids: list[str]
    slice_thickness: float | None = None
    study_uid: str = ""
    patient_id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(slice step, row spacing, column spacing) in mm, from the affine."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> tuple[float, ...]:
        """ImageOrientationPatient (row cosines then column cosines) of the slices."""
        a = self.affine[:3, :3] / np.array(self.spacing)
        return tuple(float(v) for v in (*a[:, 2], *a[:, 1]))

    def slice_positions(self) -> np.ndarray:
        """ImagePositionPatient of each slice, in index order, shape (slices, 3)."""
        k = np.arange(self.voxels.shape[0])
        return self.affine[:3, 0][None, :] * k[:, None] + self.affine[:3, 3][None, :]


def _floats(ds, keyword: str, n: int, name: str) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        raise VolumeRejected(
            "no_geometry",
            f"{name}: {keyword} missing or not {n} numbers; a volume needs the patient "
            "geometry of every slice (re-export the series with it)",
        )
    return np.array([float(v) for v in value])


def group_series(
    paths: Iterable[str | Path], unreadable: list[tuple[str, str, str]] | None = None
) -> dict[str, list[tuple[str, pydicom.Dataset]]]:
    """Headers (no pixels) of ``paths`` grouped by SeriesInstanceUID; a file that is not
    DICOM goes to ``unreadable`` as (path, reason, message) when given, else raises."""
    groups: dict[str, list[tuple[str, pydicom.Dataset]]] = defaultdict(list)
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad files
            if unreadable is None:
                raise
            message = f"{p}: not a readable DICOM file ({type(exc).__name__}); left out"
            unreadable.append((str(p), "not_dicom", message))
            continue
        groups[str(ds.get("SeriesInstanceUID", ""))].append((str(p), ds))
    return dict(groups)


def split_stacks(
    headers: Sequence[tuple[str, pydicom.Dataset]],
) -> list[list[tuple[str, pydicom.Dataset]]]:
    """The stacks inside one series: instances grouped by (StackID, orientation)."""
    stacks: dict[tuple, list] = defaultdict(list)
    for path, ds in headers:
        iop = ds.get("ImageOrientationPatient")
        key = (
            str(ds.get("StackID", "")),
            tuple(round(float(v), 3) for v in iop) if iop is not None else None,
        )
        stacks[key].append((path, ds))
    return list(stacks.values())


def _one_value(values: list, reason: str, what: str, series: str, hint: str) -> None:
    distinct = sorted({repr(v) for v in values})
    if len(distinct) > 1:
        raise VolumeRejected(
            reason,
            f"series {series}: {len(distinct)} different {what} ({', '.join(distinct[:3])}); {hint}",
        )


def check_positions(positions: np.ndarray, normal: np.ndarray, series: str) -> np.ndarray:
    """The order that sorts ``positions`` (n, 3) along ``normal``; raises
    :class:`VolumeRejected` on duplicates, whole missing slices or uneven steps."""
    if len(positions) < 2:
        raise VolumeRejected(
            "too_few_slices",
            f"series {series}: {len(positions)} slice; a volume needs at least two (ingest it as 2D)",
        )
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    steps = np.diff(d)
    if np.any(steps < 1e-3):
        i = int(np.argmax(steps < 1e-3))
        raise VolumeRejected(
            "duplicate_slices",
            f"series {series}: two slices at {d[i]:.2f} mm along the normal; remove the "
            "duplicate instance (or split repeated acquisitions into their own series)",
        )
    step = float(np.median(steps))
    ratio = steps / step
    bad = np.abs(ratio - 1) > STEP_RTOL
    if not bad.any():
        return order
    i = int(np.argmax(bad))
    whole = abs(ratio[i] - round(ratio[i])) <= STEP_RTOL and round(ratio[i]) >= 2
    if whole:
        raise VolumeRejected(
            "missing_slices",
            f"series {series}: {round(ratio[i]) - 1} slice(s) missing between {d[i]:.2f} and "
            f"{d[i + 1]:.2f} mm (step {step:.2f} mm); add the missing instances or ingest the "
            "series as 2D images",
        )
    raise VolumeRejected(
        "uneven_spacing",
        f"series {series}: slice step {steps[i]:.2f} mm at {d[i]:.2f} mm differs from the "
        f"median step {step:.2f} mm; resample the series to even spacing before ingesting",
    )


def check_stack(headers: Sequence[tuple[str, pydicom.Dataset]], series: str) -> np.ndarray:
    """Checks one stack of single-frame headers; returns the sorting order."""
    _one_value(
        [str(ds.get("FrameOfReferenceUID", "")) for _, ds in headers],
        "mixed_frame_of_reference",
        "frames of reference",
        series,
        "split the series by FrameOfReferenceUID",
    )
    _one_value(
        [
            (
                int(ds.Rows),
                int(ds.Columns),
                tuple(round(float(v), 4) for v in ds.get("PixelSpacing", ())),
            )
            for _, ds in headers
        ],
        "mixed_grid",
        "grids (rows, columns, spacing)",
        series,
        "resample the slices to one grid or split the series",
    )
    iops = [_floats(ds, "ImageOrientationPatient", 6, p) for p, ds in headers]
    if np.max(np.abs(np.array(iops) - iops[0])) > ORIENTATION_ATOL:
        raise VolumeRejected(
            "mixed_orientation",
            f"series {series}: slices in differently oriented planes (e.g. a 3-plane "
            "localizer); split it into one series per orientation, or assemble with split_stacks",
        )
    normal = np.cross(iops[0][:3], iops[0][3:])
    positions = np.array([_floats(ds, "ImagePositionPatient", 3, p) for p, ds in headers])
    return check_positions(positions, normal, series)


def assemble_series(paths: Sequence[str | Path], *, dtype=np.float32) -> SeriesVolume:
    """One volume from the single-frame instances of one series (any order)."""
    return _assemble_headers(
        [(str(p), pydicom.dcmread(p, stop_before_pixels=True)) for p in paths], dtype
    )


def _assemble_headers(headers: list[tuple[str, pydicom.Dataset]], dtype) -> SeriesVolume:
    series = str(headers[0][1].get("SeriesInstanceUID", "?"))
    _one_value(
        [str(ds.get("SeriesInstanceUID", "")) for _, ds in headers],
        "mixed_grid",
        "series",
        series,
        "pass the files of one series",
    )
    order = check_stack(headers, series)
    return _from_single_frames([headers[i][0] for i in order], series, dtype)


def _from_single_frames(paths: list[str], series: str, dtype) -> SeriesVolume:
    import highdicom as hd

    datasets = [pydicom.dcmread(p) for p in paths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vol = hd.get_volume_from_series(datasets, dtype=dtype)
    # highdicom picks its own slice direction: put the sources in the volume's index order.
    inverse = np.linalg.inv(np.asarray(vol.affine, dtype=np.float64))
    index = [
        int(round((inverse @ [*map(float, d.ImagePositionPatient), 1.0])[0])) for d in datasets
    ]
    if sorted(index) != list(range(len(datasets))):
        raise VolumeRejected(
            "uneven_spacing", f"series {series}: slice positions do not fit one regular grid"
        )
    order = np.argsort(index)
    return _series_volume(
        vol,
        datasets[0],
        [paths[i] for i in order],
        [str(datasets[i].SOPInstanceUID) for i in order],
    )


def _series_volume(vol, ds, paths: list[str], sops: list[str]) -> SeriesVolume:
    thickness = ds.get("SliceThickness")
    return SeriesVolume(
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        voxels=np.asarray(vol.array),
        affine=np.asarray(vol.affine, dtype=np.float64),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        modality=str(ds.get("Modality", "")),
        source_files=paths,
        sop_instance_uids=sops,
        slice_thickness=None if thickness in (None, "") else float(thickness),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
    )


def _frame_geometry(ds: pydicom.Dataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame positions (n, 3) and orientations (n, 6) of an Enhanced multi-frame image."""
    shared = ds.get("SharedFunctionalGroupsSequence", [pydicom.Dataset()])[0]
    positions, orientations = [], []
    for fg in ds.PerFrameFunctionalGroupsSequence:
        pos = fg.get("PlanePositionSequence") or shared.get("PlanePositionSequence")
        ori = fg.get("PlaneOrientationSequence") or shared.get("PlaneOrientationSequence")
        if not pos or not ori:
            raise VolumeRejected(
                "no_geometry",
                f"{name}: a frame lacks PlanePosition/PlaneOrientation; "
                "a volume needs the patient geometry of every frame",
            )
        positions.append(_floats(pos[0], "ImagePositionPatient", 3, name))
        orientations.append(_floats(ori[0], "ImageOrientationPatient", 6, name))
    return np.array(positions), np.array(orientations)


def assemble_multiframe(path: str | Path, *, dtype=np.float32) -> SeriesVolume:
    """One volume from an Enhanced multi-frame instance (per-frame functional groups)."""
    import highdicom as hd

    name = str(path)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    if "PerFrameFunctionalGroupsSequence" not in header:
        raise VolumeRejected(
            "no_geometry",
            f"{name}: not an Enhanced multi-frame image (no PerFrameFunctionalGroupsSequence)",
        )
    positions, orientations = _frame_geometry(header, name)
    if np.max(np.abs(orientations - orientations[0])) > ORIENTATION_ATOL:
        raise VolumeRejected(
            "mixed_orientation",
            f"{name}: frames in differently oriented planes; export one stack per orientation",
        )
    series = str(header.get("SeriesInstanceUID", name))
    check_positions(positions, np.cross(orientations[0][:3], orientations[0][3:]), series)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vol = hd.imread(name).get_volume(dtype=dtype)
    return _series_volume(vol, header, [name], [str(header.SOPInstanceUID)])


@dataclass
class AssemblyResult:
    """Volumes assembled from a folder and the series quarantined, with reasons."""

    volumes: list[SeriesVolume]
    rejected: list[tuple[str, str, str]]  # (series UID, reason code, message)
    files: int


def assemble_folder(paths: Iterable[str | Path], *, stacks: bool = False) -> AssemblyResult:
    """Every volume in ``paths``: one per series (or per stack with ``stacks``), one per
    Enhanced multi-frame instance; inconsistent series are quarantined, not raised."""
    paths = [str(p) for p in paths]
    volumes, rejected = [], []
    for series, headers in sorted(group_series(paths, rejected).items()):
        multi = [p for p, ds in headers if "PerFrameFunctionalGroupsSequence" in ds]
        single = [(p, ds) for p, ds in headers if p not in multi]
        stacks_of = split_stacks(single) if stacks else [single]
        for group in [[p] for p in multi] + [s for s in stacks_of if s]:
            try:
                if isinstance(group[0], str):
                    volumes.append(assemble_multiframe(group[0]))
                else:
                    volumes.append(_assemble_headers(group, np.float32))
            except VolumeRejected as exc:
                rejected.append((series, exc.reason, exc.message))
    return AssemblyResult(volumes, rejected, len(paths))
