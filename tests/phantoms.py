"""Synthetic DICOM phantoms for tests: realistic headers full of PHI that must be removed.

Every phantom carries the identifying values of :data:`PHI` (top level, inside nested
sequences and in private tags), UIDs that other instances reference, and pixels that
differ per ``seed`` (ingestion drops pixel-identical files as duplicates).

Also builders for hostile files: executable preambles, lengths past the end of file,
dimension overflows and deflate bombs.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "SC": "1.2.840.10008.5.1.4.1.1.7",
}
ORG_ROOT = "1.2.826.0.1.3680043.99.17."  # a site's own UID root (replaced at de-identification)

# Identifying values a phantom carries at the top level (Annex E attributes).
PHI = {
    "PatientName": "Doe^Jane^Quincy",
    "PatientID": "MRN-0042-XYZ",
    "PatientBirthDate": "19610412",
    "PatientAddress": "12 Elm Street, Springfield",
    "PatientTelephoneNumbers": "555-0199",
    "OtherPatientIDs": "OLD-MRN-991",
    "PatientMotherBirthName": "Roe^Martha",
    "InstitutionName": "St Elsewhere General Hospital",
    "InstitutionAddress": "1 Hospital Way, Boston",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Quinn^Michaela",
    "OperatorsName": "Tech^Tom",
    "NameOfPhysiciansReadingStudy": "Kildare^James",
    "AccessionNumber": "ACC-77881",
    "StudyID": "STUDY-5531",
    "StationName": "CTROOM3",
    "DeviceSerialNumber": "SN-998877",
    "StudyDescription": "Chest CT for Jane Doe",
    "SeriesDescription": "Axial Jane Doe",
    "PatientComments": "Allergic to penicillin; lives with daughter Anna",
    "ImageComments": "Jane Doe follow-up",
    "RequestingPhysician": "Welby^Marcus",
}
# Identifying values hidden in nested sequences and private tags.
NESTED_PHI = {
    "nested_institution": "Nested Clinic Of Shelbyville",
    "nested_person": "Nested^Person",
    "request_id": "REQ-31337",
    "private_name": "Doe^Jane^Private",
    "private_nested": "PRIVATE-NESTED-MRN-5",
}
ALL_PHI_STRINGS = [*PHI.values(), *NESTED_PHI.values()]


def uid(*parts: object) -> str:
    """A deterministic site-rooted UID."""
    return ORG_ROOT + ".".join(str(p) for p in parts)


def phantom(
    modality: str = "CT",
    *,
    seed: int = 0,
    patient_id: str = PHI["PatientID"],
    study: int = 1,
    series: int = 1,
    instance: int = 1,
    rows: int = 32,
    cols: int = 32,
    frames: int = 1,
    burned_in: str | None = None,
    referenced_sop_uid: str | None = None,
) -> Dataset:
    """A complete instance (file meta included) of ``modality`` CT, MR, DX, US or SC.

    CT: signed 16-bit with RescaleSlope/Intercept (HU); MR: unsigned 16-bit; DX:
    MONOCHROME1 12-bit; US: RGB 8-bit with BurnedInAnnotation YES (unless ``burned_in``);
    SC: 8-bit grey. ``frames`` > 1 makes a multi-frame instance.
    """
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = uid(study, series, instance, seed)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20210315"
    ds.StudyTime = "101530"
    ds.Modality = modality
    ds.Manufacturer = "ACME Medical"
    ds.ManufacturerModelName = "Imager 3000"
    ds.BodyPartExamined = "CHEST"
    ds.PatientSex = "F"
    ds.PatientAge = "059Y"
    ds.PatientWeight = 61.5
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.PatientID = patient_id
    ds.StudyInstanceUID = uid(study)
    ds.SeriesInstanceUID = uid(study, series)
    ds.FrameOfReferenceUID = uid(study, 9001)
    ds.SeriesNumber, ds.InstanceNumber = series, instance
    _nested_phi(ds, referenced_sop_uid or uid(study, series, 999))
    _private_phi(ds)
    _pixels(ds, modality, rng, rows, cols, frames)
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid(9, 9)
    meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    ds.file_meta = meta
    return ds


def _nested_phi(ds: Dataset, referenced_sop_uid: str) -> None:
    # A sequence Annex E removes whole.
    request = Dataset()
    request.RequestedProcedureID = NESTED_PHI["request_id"]
    request.StudyInstanceUID = ds.StudyInstanceUID
    ds.RequestAttributesSequence = Sequence([request])
    # A sequence that is kept, whose item holds PHI and a reference to another instance.
    source = Dataset()
    source.ReferencedSOPClassUID = ds.SOPClassUID
    source.ReferencedSOPInstanceUID = referenced_sop_uid
    source.InstitutionName = NESTED_PHI["nested_institution"]
    source.PersonName = NESTED_PHI["nested_person"]
    ds.SourceImageSequence = Sequence([source])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = ds.StudyInstanceUID
    ds.ReferencedStudySequence = Sequence([study_ref])


def _private_phi(ds: Dataset) -> None:
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", NESTED_PHI["private_name"])
    inner = Dataset()
    inner.private_block(0x0011, "ACME 1.0", create=True).add_new(
        0x01, "LO", NESTED_PHI["private_nested"]
    )
    inner.PatientID = NESTED_PHI["private_nested"]
    block.add_new(0x02, "SQ", Sequence([inner]))


def _pixels(ds: Dataset, modality: str, rng, rows: int, cols: int, frames: int) -> None:
    shape = (frames, rows, cols) if frames > 1 else (rows, cols)
    ramp = np.add.outer(np.arange(rows), np.arange(cols)).astype(np.int32)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    if modality == "CT":
        arr = (ramp * 10 + rng.integers(0, 50, shape)).astype(np.int16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.25
        ds.WindowCenter, ds.WindowWidth = 40, 400
    elif modality == "MR":
        arr = (ramp * 20 + rng.integers(0, 100, shape)).astype(np.uint16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelSpacing = [1.0, 0.5]  # anisotropic: resampling must keep the aspect ratio
    elif modality == "DX":
        arr = (ramp * 30 + rng.integers(0, 200, shape)).clip(0, 4095).astype(np.uint16)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.ImagerPixelSpacing = [0.15, 0.15]
        ds.PresentationIntentType = "FOR PRESENTATION"
    elif modality == "US":
        grey = (ramp * 4 + rng.integers(0, 30, (rows, cols))).clip(0, 255).astype(np.uint8)
        arr = np.stack([grey, grey // 2, 255 - grey], axis=-1)
        if frames > 1:
            arr = np.repeat(arr[None], frames, axis=0)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.BurnedInAnnotation = "YES"
    else:
        arr = (ramp * 3 + rng.integers(0, 30, shape)).clip(0, 255).astype(np.uint8)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.BurnedInAnnotation = "NO"
    ds.PixelData = arr.tobytes()


def compressed(ds: Dataset, syntax: str = RLELossless) -> Dataset:
    """``ds`` re-encoded with RLE Lossless (native) or JPEG 2000 Lossless (pylibjpeg-openjpeg)."""
    ds.compress(syntax, encoding_plugin="pylibjpeg" if syntax == JPEG2000Lossless else "")
    return ds


def to_bytes(ds: Dataset) -> bytes:
    fp = io.BytesIO()
    pydicom.dcmwrite(fp, ds, enforce_file_format=True)
    return fp.getvalue()


def write(ds: Dataset, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_bytes(ds))
    return path


def study_series(
    folder: Path, n_patients: int = 4, per_patient: int = 3, modality: str = "CT"
) -> list[Path]:
    """``n_patients`` patients with ``per_patient`` instances each; instance k>1 references k-1."""
    paths = []
    for p in range(n_patients):
        previous = None
        for i in range(1, per_patient + 1):
            ds = phantom(
                modality,
                seed=p * 100 + i,
                patient_id=f"MRN-{p:04d}",
                study=p + 1,
                instance=i,
                referenced_sop_uid=previous,
            )
            previous = ds.SOPInstanceUID
            paths.append(write(ds, folder / f"p{p:02d}" / f"i{i:02d}.dcm"))
    return paths


# ---- hostile files -------------------------------------------------------------------


def with_preamble(data: bytes, magic: bytes) -> bytes:
    """A polyglot: ``magic`` (e.g. b"MZ", b"\\x7fELF") at the start of the preamble."""
    return magic + data[len(magic) :]


def truncated_pixels(data: bytes, cut: int = 100) -> bytes:
    """PixelData declares more bytes than the file holds (the file was cut short)."""
    return data[:-cut]


def element_past_eof(data: bytes) -> bytes:
    """An element after PixelData declaring 4096 bytes, followed by only 8."""
    return (
        data
        + struct.pack("<HH", 0x7FE1, 0x0010)
        + b"OB\x00\x00"
        + struct.pack("<I", 4096)
        + b"\0" * 8
    )


def huge_dimensions(
    ds: Dataset, rows: int = 65535, cols: int = 65535, frames: int = 5000
) -> Dataset:
    """Declared rows x cols x frames far beyond the PixelData and any sane pixel cap."""
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    return ds


def deflate_bomb(expanded_mb: int = 100) -> bytes:
    """A Deflated Explicit VR file whose data set inflates to ``expanded_mb`` MB of zeros."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS["SC"]
    meta.MediaStorageSOPInstanceUID = uid(7, 7)
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = uid(9, 9)
    fp = io.BytesIO()
    fp.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(fp), meta)
    size = expanded_mb << 20
    body = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = struct.pack("<HH", 0x0008, 0x0016) + b"UI" + struct.pack("<H", 26)
    head += SOP_CLASS["SC"].encode().ljust(26, b"\0")
    head += struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00" + struct.pack("<I", size)
    chunks = [body.compress(head)]
    zeros = b"\0" * (1 << 20)
    for _ in range(expanded_mb):
        chunks.append(body.compress(zeros))
    chunks.append(body.flush())
    fp.write(b"".join(chunks))
    return fp.getvalue()
