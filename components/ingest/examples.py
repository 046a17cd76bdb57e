"""Per-instance processing and tf.Example encoding (both run in worker processes; no
TensorFlow here: ``serialize_example`` writes the protobuf bytes itself). ``to_tf_example``
builds the same Example with TensorFlow, for reference and tests."""

from __future__ import annotations

import hashlib
import os
import struct
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medflow.components.dicom import burned_in, deid
from medflow.components.dicom.errors import DicomRejected
from medflow.components.dicom.masks import mask_for_instance
from medflow.components.dicom.pixels import image_stats, to_model_input
from medflow.components.dicom.reader import HeaderView, ReadLimits, parse
from medflow.components.ingest.manifest import LabelManifest
from medflow.components.ingest.tfrecord import gzip_record
from medflow.core import features as F
from medflow.core.errors import InputError
from medflow.core.pixel_spec import PixelSpec
from medflow.core.tasks import task_for_columns

# Modalities where text burned into the pixels (names, dates) is common.
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "SM"})


# The attributes read into header features, after de-identification (UIDs remapped;
# the others are kept by Annex E with the Retain Patient Characteristics option).
HEADER_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "Manufacturer",
    "BodyPartExamined",
    "ViewPosition",
    "PatientSex",
    "PhotometricInterpretation",
)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs (picklable)."""

    key: deid.DeidKey
    pixel: PixelSpec
    limits: ReadLimits
    manifest: LabelManifest | None
    allow_burned_in: bool = False
    scan_burned_in: bool = False


@dataclass
class FileResult:
    """What became of one input file."""

    relpath: str
    status: str  # "ok" | "quarantined"
    reason: str = ""
    message: str = ""
    # original, for duplicate detection only (never written out, nor in repr: runners log
    # elements at DEBUG)
    sop_uid: str = field(default="", repr=False)
    pixel_hash: str = ""
    manifest_key: str | None = field(default=None, repr=False)  # may be an identifier
    patient_key: str = ""
    split: str | None = None  # from the manifest's split column; None = hash of the patient
    examples: list[dict] = field(default_factory=list)
    # Filled by encode_records() (in the worker): the tf.Examples as GZIP TFRecord records
    # (tfrecord.gzip_record: framed, one gzip member each), and their labels.
    records: list[bytes] = field(default_factory=list)
    record_labels: list[str | None] = field(default_factory=list)
    # How an image without BurnedInAnnotation NO was admitted (the report records it).
    burned_in_check: str = ""


def encode_records(res: FileResult) -> FileResult:
    """Serialise, frame and compress ``res.examples`` into ``res.records`` and drop the
    feature dicts, so only compressed bytes cross the process boundary and the process
    that writes the shards just appends them."""
    for feats in res.examples:
        res.records.append(gzip_record(serialize_example(feats)))
        label = feats.get("label")
        res.record_labels.append(None if label is None else str(label))
    res.examples = []
    return res


def process_file(path: str | os.PathLike[str], relpath: str, cfg: WorkerConfig) -> FileResult:
    """Read, validate, label, preprocess and de-identify one file; never raises."""
    try:
        with warnings.catch_warnings():
            # pydicom warns about each odd value it converts; odd values are handled here
            # (or the file is quarantined), so the warnings would only flood the terminal
            warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
            return _process(path, relpath, cfg)
    except DicomRejected as exc:
        message = exc.message if relpath in exc.message else f"{relpath}: {exc.message}"
        return FileResult(relpath, "quarantined", exc.reason, message)
    except MemoryError:
        return FileResult(
            relpath, "quarantined", "too_many_pixels", f"{relpath}: out of memory while decoding"
        )
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a bug must not stop a batch; reported loudly
        if type(exc).__name__ == "PanicException":  # a Rust decoder (pyo3) gave up on the data
            return FileResult(
                relpath,
                "quarantined",
                "decode_error",
                f"{relpath}: pixel data could not be decoded (the decoder failed: {exc})",
            )
        tb = traceback.format_exc(limit=3).replace("\n", " | ")
        return FileResult(
            relpath,
            "quarantined",
            "internal_error",
            f"{relpath}: {type(exc).__name__}: {exc} [{tb}]",
        )


def _check_burned_in(h: HeaderView, modality: str, relpath: str, cfg: WorkerConfig) -> str:
    """Refuses an image whose pixels may show identifiers: BurnedInAnnotation YES whatever
    the modality, and anything but NO where text is common or the modality is unknown,
    unless ``cfg.scan_burned_in`` and OCR finds no text. Returns how it was admitted."""
    burned = str(h.get("BurnedInAnnotation", "") or "").upper()
    stated = f"{modality or 'no-modality'} image with BurnedInAnnotation={burned or 'absent'}"
    if burned == "YES" or (
        burned != "NO"
        and (modality in BURNED_IN_MODALITIES or not modality)
        and not cfg.scan_burned_in
    ):
        raise DicomRejected(
            "burned_in_annotation",
            f"{relpath}: {stated}; pixels may show patient identifiers. Check/redact the "
            "pixels and rerun with --allow-burned-in"
            + ("" if burned == "YES" else ", or --scan-burned-in to admit it if OCR finds no text"),
        )
    if burned == "NO" or (modality and modality not in BURNED_IN_MODALITIES):
        return ""
    words = burned_in.scan(h, cfg.pixel.frames, cfg.pixel.max_pixels, relpath)
    if words:
        raise DicomRejected(
            "burned_in_annotation",
            f"{relpath}: {stated}; OCR found {words} word(s) of text in the pixels. Redact them "
            "(or check them and rerun with --allow-burned-in)",
        )
    return f"{stated}: admitted, OCR found no text"


def _process(path: str | os.PathLike[str], relpath: str, cfg: WorkerConfig) -> FileResult:
    if os.path.islink(path):  # never read through a link: it may lead out of the input
        raise DicomRejected(
            "symlink",
            f"{relpath}: a symbolic link; medflow reads only regular files inside the input "
            "folder (copy the file or folder in instead)",
        )
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DicomRejected("io_error", f"{relpath}: cannot read ({exc.strerror or exc})") from exc
    ds = parse(data, relpath, cfg.limits)
    # Every value below is read through one view (each decoded once, from the raw bytes).
    h = HeaderView(ds)
    modality = str(h.get("Modality", "") or "").upper()
    checked = "" if cfg.allow_burned_in else _check_burned_in(h, modality, relpath, cfg)
    sop, series, study = (
        str(h.get(k, "") or "") for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
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
    frames = to_model_input(h, cfg.pixel, relpath)
    if labels:  # the task that trains on them checks them (and reads referenced files)
        labels = _task_labels(labels, ds, cfg.manifest, key, relpath)
    if mask_path is not None:  # before de-identification: needs the original geometry
        labels = {**labels, F.MASK: mask_for_instance(ds, mask_path, cfg.pixel, relpath).tobytes()}
    identity = deid.derive_identity(h, cfg.key, site)
    # Only what is emitted is de-identified (the data set itself is never written): the
    # header features are read from a de-identified copy of these attributes alone.
    header = _header_features(
        deid.deidentified_values(h, HEADER_KEYWORDS, cfg.key, identity), identity
    )
    examples = [_example_features(arr, geom, header, labels) for arr, geom in frames]
    result = FileResult(
        relpath, "ok", "", "", sop, pixel_hash, key, identity.patient_key, split, examples
    )
    result.burned_in_check = checked
    return result


def _task_labels(labels: dict, ds, manifest, key: str, relpath: str) -> dict:
    """``labels`` as the task training on their columns takes them at ingestion
    (:meth:`medflow.core.tasks.Task.ingest_labels`); a cell it refuses quarantines the file."""
    task = task_for_columns(list(labels))
    if task is None:
        return labels
    line = getattr(manifest, "lines", {}).get(key, "?")
    where = f"{relpath} (label manifest {manifest.source} line {line})"
    base = str(Path(manifest.source).resolve().parent)
    try:
        return dict(task.ingest_labels(labels, ds, base, where))
    except InputError as exc:
        raise DicomRejected("label_invalid", str(exc)) from None


def _text(ds, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip().upper()
    return value or F.UNKNOWN


def _header_features(ds, identity: deid.Identity) -> dict:
    """Features from DE-IDENTIFIED values only: ``deid.deidentified_values`` of
    ``HEADER_KEYWORDS`` (or a de-identified data set; anything with ``.get(keyword)``)."""
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
            **image_stats(arr),
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


_SMALL_VARINTS = [bytes((n,)) for n in range(128)]


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL_VARINTS[n]
    n &= 0xFFFFFFFFFFFFFFFF  # int64 as protobuf encodes it (negatives take 10 bytes)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (``number`` < 16: its key is one byte)."""
    return _SMALL_VARINTS[number << 3 | 2] + _varint(len(payload)) + payload


def _floats(values: list | tuple) -> bytes:
    try:
        return struct.pack(f"<{len(values)}f", *values)
    except OverflowError:  # beyond float32: numpy rounds to inf as protobuf does
        with np.errstate(over="ignore"):
            return np.asarray(values, dtype="<f4").tobytes()


_KEYS: dict[str, bytes] = {}  # encoded map keys (feature names), built once per process


def serialize_example(feats: dict) -> bytes:
    """The bytes of ``to_tf_example(feats).SerializeToString(deterministic=True)``, built
    without TensorFlow or protobuf objects, so workers can build the records.

    Same type mapping as :func:`to_tf_example`; map entries sorted by key, as protobuf's
    deterministic serialisation orders them. A test checks byte equality with protobuf.
    """
    entries = []
    for name in sorted(feats, key=str.encode):
        value = feats[name]
        memo = _memo_key(name, value)
        entry = _ENTRIES.get(memo) if memo is not None else None
        if entry is None:
            entry = _map_entry(name, value)
            if memo is not None:
                if len(_ENTRIES) >= _MAX_ENTRIES:
                    _ENTRIES.clear()
                _ENTRIES[memo] = entry
        entries.append(entry)
    return _field(1, b"".join(entries))


# Encoded map entries of str/int features, which mostly repeat from file to file (modality,
# shape, sizes, labels...): built once per process, looked up by (name, type, value).
_ENTRIES: dict[tuple, bytes] = {}
_MAX_ENTRIES = 4096


def _memo_key(name: str, value: object) -> tuple | None:
    kind = type(value)
    if kind is str or kind is int:
        return name, kind, value
    if kind is list and all(type(v) is int for v in value):
        return name, kind, tuple(value)
    return None  # floats (0.0 == -0.0 but they encode differently), bytes, other lists


def _map_entry(name: str, value: object) -> bytes:
    """One ``features.feature`` map entry: the key and the Feature."""
    values = value if isinstance(value, list | tuple) else [value]
    if isinstance(value, bytes):
        feature = _field(1, _field(1, value))
    elif values and isinstance(values[0], str):
        feature = _field(1, b"".join([_field(1, v.encode()) for v in values]))
    elif values and isinstance(values[0], float):
        feature = _field(2, _field(1, _floats(values)))
    elif values and isinstance(values[0], bytes):
        feature = _field(1, b"".join([_field(1, v) for v in values]))
    elif not values:
        feature = _field(2, b"")
    else:
        feature = _field(3, _field(1, b"".join([_varint(int(v)) for v in values])))
    key = _KEYS.get(name) or _KEYS.setdefault(name, _field(1, name.encode()))
    return _field(1, key + _field(2, feature))


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
