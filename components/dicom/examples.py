"""Per-instance processing (runs in worker processes; no TensorFlow here) and the
conversion of its plain-Python features into ``tf.train.Example`` (main process)."""

from __future__ import annotations

import hashlib
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.dicom import deid
from components.dicom.errors import DicomRejected
from components.dicom.manifest import LabelManifest
from components.dicom.masks import mask_for_instance
from components.dicom.pixels import PixelSpec, to_model_input
from components.dicom.reader import ReadLimits, parse
from components.models import features as F

# Modalities where text burned into the pixels (names, dates) is common.
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "SM"})


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs (picklable)."""

    key: deid.DeidKey
    pixel: PixelSpec
    limits: ReadLimits
    manifest: LabelManifest | None
    allow_burned_in: bool = False


@dataclass
class FileResult:
    """What became of one input file."""

    relpath: str
    status: str  # "ok" | "quarantined"
    reason: str = ""
    message: str = ""
    sop_uid: str = ""  # original, for duplicate detection only (never written out)
    pixel_hash: str = ""
    manifest_key: str | None = None
    patient_key: str = ""
    split: str | None = None  # from the manifest's split column; None = hash of the patient
    examples: list[dict] = field(default_factory=list)


def process_file(path: Path, relpath: str, cfg: WorkerConfig) -> FileResult:
    """Read, validate, label, preprocess and de-identify one file; never raises."""
    try:
        return _process(path, relpath, cfg)
    except DicomRejected as exc:
        return FileResult(relpath, "quarantined", exc.reason, exc.message)
    except MemoryError:
        return FileResult(
            relpath, "quarantined", "too_many_pixels", f"{relpath}: out of memory while decoding"
        )
    except Exception as exc:  # noqa: BLE001 - a bug must not stop a batch; it is reported loudly
        tb = traceback.format_exc(limit=3).replace("\n", " | ")
        return FileResult(
            relpath,
            "quarantined",
            "internal_error",
            f"{relpath}: {type(exc).__name__}: {exc} [{tb}]",
        )


def _process(path: Path, relpath: str, cfg: WorkerConfig) -> FileResult:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DicomRejected("io_error", f"{relpath}: cannot read ({exc.strerror or exc})") from exc
    ds = parse(data, relpath, cfg.limits)
    modality = str(ds.get("Modality", "") or "").upper()
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if modality in BURNED_IN_MODALITIES and burned != "NO" and not cfg.allow_burned_in:
        raise DicomRejected(
            "burned_in_annotation",
            f"{relpath}: {modality} image with BurnedInAnnotation={burned or 'absent'}; pixels may show "
            "patient identifiers. Check/redact the pixels and rerun with --allow-burned-in to include it",
        )
    sop, series, study = (
        str(ds.get(k, "") or "")
        for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
    )
    labels, site, key, split, mask_path = {}, None, None, None, None
    if cfg.manifest is not None:
        key = cfg.manifest.lookup(sop, series, study, relpath)
        if key is None:
            raise DicomRejected(
                "unlabeled",
                f"{relpath}: no row in {cfg.manifest.source} for its {cfg.manifest.key_column}; add one or "
                "ingest without --labels",
            )
        labels, site = cfg.manifest.rows[key], cfg.manifest.sites.get(key)
        split = cfg.manifest.splits.get(key)
        mask_path = cfg.manifest.masks.get(key)
    raw_pixels = ds.get_item("PixelData")
    pixel_hash = hashlib.blake2b(
        raw_pixels.value if raw_pixels is not None else b"", digest_size=16
    ).hexdigest()
    frames = to_model_input(ds, cfg.pixel, relpath)
    if mask_path is not None:  # before de-identification: needs the original geometry
        labels = {**labels, F.MASK: mask_for_instance(ds, mask_path, cfg.pixel, relpath).tobytes()}
    identity = deid.deidentify(ds, cfg.key, deid.derive_identity(ds, cfg.key, site))
    header = _header_features(ds, identity)
    examples = [_example_features(arr, geom, header, labels) for arr, geom in frames]
    return FileResult(
        relpath, "ok", "", "", sop, pixel_hash, key, identity.patient_key, split, examples
    )


def _text(ds, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip().upper()
    return value or F.UNKNOWN


def _header_features(ds, identity: deid.Identity) -> dict:
    """Features from the DE-IDENTIFIED data set only."""
    sex = _text(ds, "PatientSex")
    return {
        F.PATIENT_ID: identity.patient_key,
        F.STUDY_UID: str(ds.get("StudyInstanceUID", "")),
        F.SERIES_UID: str(ds.get("SeriesInstanceUID", "")),
        F.SOP_UID: str(ds.get("SOPInstanceUID", "")),
        F.MODALITY: _text(ds, "Modality"),
        F.MANUFACTURER: _text(ds, "Manufacturer"),
        F.BODY_PART: _text(ds, "BodyPartExamined"),
        F.VIEW_POSITION: _text(ds, "ViewPosition"),
        F.SEX: sex if sex in ("M", "F", "O") else F.UNKNOWN,
        F.AGE_BUCKET: deid.age_bucket(identity.age_years),
        F.SITE: identity.site,
        F.PHOTOMETRIC: _text(ds, "PhotometricInterpretation"),
    }


def _example_features(arr: np.ndarray, geom, header: dict, labels: dict) -> dict:
    arr = np.ascontiguousarray(arr, dtype="<f4")
    feats = dict(header)
    feats.update(
        {
            F.IMAGE: arr.tobytes(),
            F.IMAGE_SHAPE: list(arr.shape),
            F.IMAGE_DTYPE: b"float32",
            "img_mean": float(arr.mean()),
            "img_std": float(arr.std()),
            "img_min": float(arr.min()),
            "img_max": float(arr.max()),
            F.FRAME_INDEX: geom.frame_index,
            F.ORIG_ROWS: geom.orig_rows,
            F.ORIG_COLS: geom.orig_cols,
            F.N_FRAMES: geom.n_frames,
            F.PIXEL_SPACING: list(geom.pixel_spacing) if geom.pixel_spacing else [],
            F.RESAMPLE_SCALE: float(geom.scale),
            F.RESAMPLE_PAD: list(geom.pad),
        }
    )
    feats.update(labels)
    return feats


def to_tf_example(feats: dict):
    """Plain features → ``tf.train.Example`` (str/bytes → bytes, int → int64, float → float)."""
    import tensorflow as tf

    out = {}
    for name, value in feats.items():
        values = value if isinstance(value, list | tuple) else [value]
        if isinstance(value, bytes):
            out[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif values and isinstance(values[0], str):
            out[name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[v.encode() for v in values])
            )
        elif values and isinstance(values[0], float):
            out[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif values and isinstance(values[0], bytes):
            out[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        else:
            # ints (and empty lists, stored as an empty float list: pixel spacing is float)
            if not values:
                out[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[]))
            else:
                out[name] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(v) for v in values])
                )
    return tf.train.Example(features=tf.train.Features(feature=out))
