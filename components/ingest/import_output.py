"""Output of the ``medflow import-*`` helpers: folders built in a staging folder inside the
output folder, swapped in whole, and the label manifest written last (atomically), so an
interrupted import never leaves a manifest describing files that are not there."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

from medflow.core.files import atomic_write, swap_in_folders

MANIFEST_NAME = "labels.csv"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar on a terminal only (``disable=None``: no log spam in CI)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, disable=None if enabled else True)


def publish(
    staging: Path,
    out_dir: Path,
    folders: Sequence[str],
    header: Sequence[str],
    rows: Sequence[tuple],
) -> Path:
    """Moves ``staging/<folder>`` to ``out_dir/<folder>`` for each folder (an old one goes to
    the staging folder, to be removed with it), then writes ``out_dir/labels.csv``.

    The old manifest is removed first: no labels.csv beside folders it does not describe.
    Returns the manifest's path.
    """
    manifest = out_dir / MANIFEST_NAME
    manifest.unlink(missing_ok=True)
    swap_in_folders(staging, out_dir, folders)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(manifest, text.getvalue())
    return manifest


def grey8_image(ds, rows: int, cols: int) -> None:
    """The Image Pixel module of an 8-bit MONOCHROME2 image (``PixelData`` set by the caller),
    as every importer writes its images."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(rows), int(cols)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0


def name_uid(namespace: str, kind: str, name: str) -> str:
    """A stable ``2.25`` UID for ``name``'s ``kind`` (sop, study, series) in an importer's
    ``namespace``: the same source file gets the same UIDs on every import."""
    h = hashlib.sha256(f"{namespace}|{kind}|{name}".encode()).digest()[:16]
    return f"2.25.{int.from_bytes(h, 'big')}"


def secondary_capture(namespace: str, stem: str, date: str, patient: str):
    """A Secondary Capture instance for source file ``stem``, one study and series of its own
    (UIDs from :func:`name_uid`), patient ``<NAMESPACE>^patient`` / ``<NAMESPACE>-patient``, no
    burned-in text; the caller adds the modality, descriptions and the pixel modules."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SC_STORAGE
    meta.MediaStorageSOPInstanceUID = name_uid(namespace, "sop", stem)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = SC_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.PatientName = f"{namespace.upper()}^{patient}"
    ds.PatientID = f"{namespace.upper()}-{patient}"[:64]
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.StudyInstanceUID = name_uid(namespace, "study", stem)
    ds.SeriesInstanceUID = name_uid(namespace, "series", stem)
    ds.StudyID = stem[:16]
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    return ds
