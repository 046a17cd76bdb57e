"""Registration results out: the warped moving image as a derived DICOM image on the fixed
image's grid (``--warp-out``, with the displacement field beside it as a NumPy file), and a
before/after PNG overlay (``--overlay-out``).

The derived image is a Secondary Capture instance in the fixed image's study (patient and
study modules copied, the fixed image's modality, pixel spacing, position and orientation),
a new series, ImageType DERIVED\\SECONDARY\\REGISTERED, and references to both sources:
ReferencedImageSequence (fixed, then moving) and SourceImageSequence (the moving image).
The field is ``field-<SOPInstanceUID of the derived image>.npy``: float32 [rows, cols, 2]
(row, col) offsets in model-grid pixels, ``warped[y, x] = moving[y + dy, x + dx]``
(pydicom cannot yet build a Deformable Spatial Registration object that we could check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medflow.core.files import atomic_open
from medflow.core.tasks import OutputOptions, OutputReport

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "Modality", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
    "FrameOfReferenceUID", "BodyPartExamined", "PatientOrientation",
)  # fmt: skip


def warped_on_fixed_grid(result) -> np.ndarray:
    """The warped image on the fixed image's source grid (the preprocessing undone)."""
    from medflow.serving.source_grid import to_source_grid

    fixed = result.source.fixed
    rows, cols = fixed.geometry.orig_rows, fixed.geometry.orig_cols
    return to_source_grid(result.warped, rows, cols, fixed.source_spacing, result.source.spec.size)


def derived_dataset(result):
    """The derived DICOM image of one registered pair (see the module docstring)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    from medflow.components.dicom.reader import read_dicom

    fixed = read_dicom(result.source.fixed.path)
    moving = read_dicom(result.source.moving.path)
    pixels = warped_on_fixed_grid(result)
    ds = Dataset()
    for keyword in _COPIED:
        if keyword in fixed:
            setattr(ds, keyword, fixed.data_element(keyword).value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SC_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SC_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 901, 1
    ds.SeriesDescription = "medflow registration: moving image warped onto the fixed image"
    ds.ImageType = ["DERIVED", "SECONDARY", "REGISTERED"]
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "NO"
    ds.DerivationDescription = (
        f"deformable registration by {result.model_name}:{result.model_version}; "
        f"folding {result.folding_fraction:.4%}"
    )[:1024]
    ds.ReferencedImageSequence = [_reference(fixed), _reference(moving)]
    ds.SourceImageSequence = [_reference(moving)]
    lo, hi = float(pixels.min()), float(pixels.max())
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.clip(np.round((pixels - lo) / slope), 0, 65535).astype(np.uint16)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = f"{lo:.6g}", f"{slope:.6g}"
    ds.RescaleType = "US"
    ds.PixelData = stored.tobytes()
    return ds


def _reference(source):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


@dataclasses.dataclass(frozen=True)
class PushedImage:
    """A derived (warped) image stored in the fixed image's study in the PACS."""

    study_instance_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    fixed_sop_instance_uid: str
    moving_sop_instance_uid: str
    kind: str = "REGISTERED"

    def describe(self) -> str:
        return (
            f"stored warped image {self.sop_instance_uid} (moving "
            f"{self.moving_sop_instance_uid} on fixed {self.fixed_sop_instance_uid}) in study "
            f"{self.study_instance_uid}"
        )


def push_warped(results: Sequence, source, settings: Mapping[str, object]) -> list[PushedImage]:
    """Store each pair's derived warped image (:func:`derived_dataset`) in the fixed
    image's study (STOW-RS through ``source``, a ``DicomwebSource``)."""
    from io import BytesIO

    from pydicom.filewriter import dcmwrite

    pushed = []
    for r in results:
        ds = derived_dataset(r)
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        source.store([buffer.getvalue()], str(ds.StudyInstanceUID))
        refs = [str(item.ReferencedSOPInstanceUID) for item in ds.ReferencedImageSequence]
        pushed.append(
            PushedImage(
                str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), *refs
            )
        )
    return pushed


def _write_derived(result, out_dir: Path) -> tuple[str, str]:
    from pydicom.filewriter import dcmwrite

    ds = derived_dataset(result)
    path = out_dir / f"warped-{ds.SOPInstanceUID}.dcm"
    with atomic_open(path, "wb") as fh:
        dcmwrite(fh, ds, enforce_file_format=True)
    field = out_dir / f"field-{ds.SOPInstanceUID}.npy"
    with atomic_open(field, "wb") as fh:
        np.save(fh, np.asarray(result.displacement, np.float32))
    return str(path), str(field)


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float32)
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)


def overlay(result) -> np.ndarray:
    """Before | after, RGB: the fixed image in magenta, the moving (left) or warped (right)
    image in green (aligned structures turn grey); mask outlines in yellow (fixed) and cyan
    (moving / warped moving) when the pair has masks."""
    fixed = _grey(result.source.fixed.array[..., 0])
    panels = []
    for image, mask in (
        (result.source.moving.array[..., 0], None),
        (result.warped, result.warped_mask),
    ):
        rgb = np.stack([fixed, _grey(image), fixed], axis=-1)
        if result.fixed_mask is not None:
            rgb[_outline(result.fixed_mask)] = (255, 255, 0)
            moving_mask = mask if mask is not None else _moving_mask(result)
            rgb[_outline(moving_mask)] = (0, 255, 255)
        panels.append(rgb)
    gap = np.full((fixed.shape[0], 2, 3), 255, np.uint8)
    both = np.concatenate([panels[0], gap, panels[1]], axis=1)
    scale = max(1, 256 // fixed.shape[0])
    return np.repeat(np.repeat(both, scale, axis=0), scale, axis=1)


def _moving_mask(result) -> np.ndarray:
    from medflow.components.tasks.registration.results import _masks

    return _masks(result.source)[1]


def _outline(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, bool)
    inner = mask.copy()
    inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def write_files(results: list, options: OutputOptions) -> tuple[list, OutputReport]:
    """Derived DICOM images and fields (``warp_out``), before/after PNGs (``overlay_out``)."""
    from PIL import Image

    report = OutputReport()
    warp_dir, overlay_dir = options.files.get("warp_out"), options.files.get("overlay_out")
    if warp_dir:
        Path(warp_dir).mkdir(parents=True, exist_ok=True)
        written = [_write_derived(r, Path(warp_dir)) for r in results]
        report.per_result["warped_dicom"] = [w[0] for w in written]
        report.per_result["field"] = [w[1] for w in written]
        report.lines.append(f"wrote {len(written)} warped image(s) and field(s) to {warp_dir}")
    if overlay_dir:
        Path(overlay_dir).mkdir(parents=True, exist_ok=True)
        paths = []
        for r in results:
            path = Path(overlay_dir) / f"pair-{r.source.line}.png"
            with atomic_open(path, "wb") as fh:
                Image.fromarray(overlay(r)).save(fh, format="PNG")
            paths.append(str(path))
        report.per_result["overlay"] = paths
        report.lines.append(f"wrote {len(paths)} before/after overlay(s) to {overlay_dir}")
    if options.review_dir:
        results = [save_review_image(r, Path(options.review_dir)) for r in results]
    return results, report


def save_review_image(result, out_dir: Path):
    """The warped image on the fixed image's grid as an 8-bit PNG for the review page
    (``review_ref``); the same display scaling as the fixed image is not assumed."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"warped-{result.sop_instance_uid}-{result.source.line}.png"
    with atomic_open(path, "wb") as fh:
        Image.fromarray(_grey(warped_on_fixed_grid(result))).save(fh, format="PNG")
    result.review_ref = str(path)
    return result
