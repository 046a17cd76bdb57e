"""MedMNIST-style ``.npz`` → a folder of DICOM files and a label manifest.

Layout written under ``out_dir``::

    dicom/<npz split>/<index>.dcm   one single-frame instance per image
    labels.csv                      SOPInstanceUID,label,split,_npz_split,_npz_index

Each image becomes its own synthetic patient, study and series (the datasets carry no
patient identity). UIDs derive from a digest of the npz file, its split and the image index,
so re-importing the same file (whole or a subset) gives the same UIDs. The npz ``val`` split becomes the manifest split ``eval`` (the split
name ingestion uses for evaluation); other names are kept.

``dicom/`` is built in a staging folder and renamed into place whole, then ``labels.csv``
is written through a temporary file: a ``labels.csv`` beside ``dicom/`` means a complete
import.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from medflow.components.ingest.import_output import (
    SC_STORAGE,
    grey8_image,
    progress_bar,
    publish,
)
from medflow.components.ingest.npz_volumes import import_npz_volumes
from medflow.core.errors import ConfigError, InputError

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
SPLIT_NAMES = {"val": "eval"}  # npz split -> ingestion split
DICOM_DIR = "dicom"
_STUDY_DATE = dt.date(2020, 1, 1)


def import_npz(
    npz_path: str | Path,
    out_dir: str | Path,
    *,
    splits: tuple[str, ...] | list[str] = ("train", "val"),
    limit: int | None = None,
    modality: str = "DX",
    progress: bool = False,
) -> Path:
    """Write the images of ``splits`` as DICOM files plus ``labels.csv``.

    Args:
        npz_path: file with ``<split>_images`` (N, rows, cols) uint8 and ``<split>_labels``
            (N, 1) or (N,) integers.
        out_dir: created if needed; an earlier ``dicom/`` and ``labels.csv`` are replaced.
        splits: npz split names to import, in this order.
        limit: at most this many images per split (the first ones).
        modality: "DX" writes Digital X-Ray instances; any other modality code (e.g. "US")
            writes Secondary Capture instances carrying that Modality.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The path of ``labels.csv`` (the DICOM files are under ``dicom/`` beside it).

    Raises:
        InputError: the npz file is missing, unreadable, lacks a split or has bad arrays.
        ConfigError: invalid ``limit`` or ``modality``.
    """
    npz_path, out_dir = Path(npz_path), Path(out_dir)
    modality = modality.strip().upper()
    if not (modality.isalpha() and 2 <= len(modality) <= 4):
        raise ConfigError(f"modality {modality!r}: expected a DICOM modality code like DX or US")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be a positive number of images per split")
    arrays = _load(npz_path, splits)
    if next(iter(arrays.values()))[0].ndim == 4:  # (N, D, H, W): one DICOM volume per case
        return import_npz_volumes(npz_path, out_dir, arrays, limit, progress, SPLIT_NAMES)
    total, root, staging = start_import(npz_path, out_dir, arrays, limit)
    rows: list[tuple] = []
    try:
        bar = progress_bar(total, progress, "import-npz")
        for split, (images, labels) in arrays.items():
            folder = staging / DICOM_DIR / split
            folder.mkdir(parents=True)
            encoder = _template_encoder(images, split, root, modality, npz_path.name)
            for index in range(min(len(labels), limit or len(labels))):
                values = _values(images[index], split, index, root, npz_path.name)
                (folder / f"{index:06d}.dcm").write_bytes(encoder.encode(values))
                ingest_split = SPLIT_NAMES.get(split, split)
                rows.append(
                    (values["SOPInstanceUID"], int(labels[index]), ingest_split, split, index)
                )
                bar.update(1)
        bar.close()
        manifest = publish(
            staging,
            out_dir,
            [DICOM_DIR],
            ("SOPInstanceUID", "label", "split", "_npz_split", "_npz_index"),
            rows,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def start_import(npz_path: Path, out_dir: Path, arrays: dict, limit: int | None):
    """(images to write, the npz file's digest for UIDs, a new staging folder in out_dir)."""
    total = sum(min(len(labels), limit or len(labels)) for _, labels in arrays.values())
    root = hashlib.sha256(npz_path.read_bytes()).hexdigest()[:32]
    out_dir.mkdir(parents=True, exist_ok=True)
    return total, root, Path(tempfile.mkdtemp(prefix=".import-", dir=out_dir))


def _load(npz_path: Path, splits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not splits:
        raise ConfigError("no split to import: pass split names like train,val")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            available = sorted(npz.files)
            out = {}
            for split in splits:
                ikey, lkey = f"{split}_images", f"{split}_labels"
                if ikey not in npz.files or lkey not in npz.files:
                    raise InputError(
                        f"{npz_path}: no {ikey!r}/{lkey!r} arrays for split {split!r}; the file "
                        f"holds {', '.join(available)}; pick splits among those"
                    )
                out[split] = (npz[ikey], npz[lkey])
    except FileNotFoundError as exc:
        raise InputError(f"{npz_path}: no such npz file") from exc
    except (OSError, ValueError) as exc:  # not a zip / pickled arrays / corrupt member
        raise InputError(f"{npz_path}: cannot read as a NumPy .npz file ({exc})") from exc
    for split, (images, labels) in out.items():
        if images.ndim not in (3, 4) or images.dtype != np.uint8:
            raise InputError(
                f"{npz_path}: {split}_images has shape {images.shape} dtype {images.dtype}; "
                "expected (N, rows, cols) uint8 grey-level images or (N, D, H, W) volumes"
            )
        labels = labels.reshape(len(labels), -1)
        if labels.shape != (len(images), 1) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(
                f"{npz_path}: {split}_labels has shape {labels.shape} dtype {labels.dtype}; "
                f"expected ({len(images)}, 1) integer class labels (multi-label is not supported)"
            )
        out[split] = (images, labels[:, 0])
    if len({images.shape[1:] for images, _ in out.values()}) != 1:
        shapes = {split: list(images.shape[1:]) for split, (images, _) in out.items()}
        raise InputError(f"{npz_path}: the splits hold different image shapes {shapes}")
    return out


def _template_encoder(
    images: np.ndarray, split: str, root: str, modality: str, source: str
) -> _SplitEncoder:
    template = _instance(images[0], split, 0, root, modality, source)
    # dcmwrite fills in the file meta group (version, implementation name) as it writes.
    template = dcmread(io.BytesIO(_to_bytes(template)))
    return _SplitEncoder(template)


def _to_bytes(ds: Dataset) -> bytes:
    fp = io.BytesIO()
    dcmwrite(fp, ds, enforce_file_format=True)
    return fp.getvalue()


def _uid(root: str, kind: str, split: str, index: int) -> str:
    """Deterministic "2.25.<int>" UID from the file digest, kind, split and index."""
    h = hashlib.sha256(f"{root}|{kind}|{split}|{index}".encode()).digest()[:16]
    return f"2.25.{int.from_bytes(h, 'big')}"


def _values(
    pixels: np.ndarray, split: str, index: int, root: str, source: str
) -> dict[str, str | bytes]:
    """The attributes that differ between the instances of one split, by keyword."""
    patient = f"NPZ{split[:2].upper()}{index:06d}"
    date = (_STUDY_DATE + dt.timedelta(days=index % 365)).strftime("%Y%m%d")
    data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return {
        "SOPInstanceUID": _uid(root, "sop", split, index),
        "StudyDate": date,
        "SeriesDate": date,
        "ContentDate": date,
        "AccessionNumber": f"A{index:07d}",
        "StudyDescription": f"{source} {split} {index}",
        "PatientName": f"NPZ^{patient}",
        "PatientID": patient,
        "StudyInstanceUID": _uid(root, "study", split, index),
        "SeriesInstanceUID": _uid(root, "series", split, index),
        "StudyID": f"S{index:06d}",
        "PixelData": data + b"\x00" * (len(data) % 2),  # even length (PS3.5 7.1.1)
    }


def new_instance(sop_class: str, sop_uid: str) -> Dataset:
    """An empty instance of ``sop_class`` with its file meta (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def _instance(
    pixels: np.ndarray, split: str, index: int, root: str, modality: str, source: str
) -> Dataset:
    """One synthetic-identity instance holding ``pixels`` (rows, cols) uint8."""
    values = _values(pixels, split, index, root, source)
    sop_class = DX_STORAGE if modality == "DX" else SC_STORAGE
    ds = new_instance(sop_class, values["SOPInstanceUID"])
    ds.ImageType = ["DERIVED", "PRIMARY"] if modality == "DX" else ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = sop_class
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.Modality = modality
    ds.Manufacturer = "medflow import-npz"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"{source} {split}"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = "IDENTITY"
        ds.ImagerPixelSpacing = [1.0, 1.0]  # nominal: MedMNIST images carry no true spacing
        ds.DetectorType = "DIRECT"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    else:
        ds.ConversionType = "WSD"
    grey8_image(ds, *pixels.shape[:2])
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


class _SplitEncoder:
    """Part 10 bytes of the instances of one split, much faster than pydicom per image.

    pydicom builds and encodes one template instance (so every static element is encoded
    and validated by pydicom); per image only the attributes of :func:`_values` are encoded
    here, as explicit VR little endian, and spliced in tag order. A test checks the bytes
    equal ``dcmwrite(_instance(...))``.
    """

    def __init__(self, template: Dataset):
        self._parts: list[bytes | tuple[int, str, str]] = []
        for elem in template:
            if elem.keyword in _DYNAMIC:
                self._parts.append((int(elem.tag), elem.VR, elem.keyword))
            else:
                self._parts.append(_encode_static(elem))
        meta = template.file_meta
        self._meta_head = b"".join(
            _encode_static(meta[k])
            for k in ("FileMetaInformationVersion", "MediaStorageSOPClassUID")
        )
        self._meta_tail = b"".join(
            _encode_static(meta[k])
            for k in ("TransferSyntaxUID", "ImplementationClassUID", "ImplementationVersionName")
            if k in meta
        )

    def encode(self, values: dict[str, str | bytes]) -> bytes:
        sop = _element(0x00020003, "UI", values["SOPInstanceUID"])
        group = self._meta_head + sop + self._meta_tail
        out = [b"\x00" * 128, b"DICM", _element(0x00020000, "UL", len(group)), group]
        for part in self._parts:
            out.append(
                part if isinstance(part, bytes) else _element(part[0], part[1], values[part[2]])
            )
        return b"".join(out)


_DYNAMIC = frozenset(_values(np.zeros((2, 2), np.uint8), "x", 0, "", "").keys())
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})


def _element(tag: int, vr: str, value: str | bytes | int) -> bytes:
    """One explicit VR little endian element (UL, strings and OB/OW bytes only)."""
    if vr == "UL":
        data = struct.pack("<I", value)
    else:
        data = value.encode("latin-1") if isinstance(value, str) else value
        if len(data) % 2:
            data += b"\x00" if vr in ("UI", "OB", "OW") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in _LONG_VRS:
        return head + struct.pack("<2xI", len(data)) + data
    return head + struct.pack("<H", len(data)) + data


def _encode_static(elem) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, elem)
    return fp.getvalue()
