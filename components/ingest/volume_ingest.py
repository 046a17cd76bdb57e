"""Ingesting volumes: a folder with a ``volume_spec.json`` (written by ``medflow
import-nifti`` or by ``medflow import-npz`` on 3D arrays) -> one volume example per NIfTI
image or Enhanced multi-frame DICOM file (``.dcm``), split by patient, with the report
counting volumes as well as files. A manifest ``label`` column becomes the example's class
label (3D classification).

Each image is checked (3D, readable), paired with its manifest mask (same grid), resampled,
normalised and centred on the :class:`VolumeSpec` grid, and written as one ``tf.Example``
(:mod:`medflow.core.features`: ``image`` [slices, rows, cols, 1], ``mask``, the ``volume_*``
geometry). The rules of 2D ingestion apply: every input ends written, quarantined (reason and
message) or duplicate (same voxels as an earlier file); a patient's volumes share a split;
outputs are built in a staging folder and moved in whole, the report last.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from medflow.components.dicom.keys import DeidKey
from medflow.components.ingest.beam_pipeline import _copy_quarantined
from medflow.components.ingest.engine import (
    REPORT_NAME,
    IngestOptions,
    IngestReport,
    _manifest_summary,
    list_inputs,
    write_json_atomic,
)
from medflow.components.ingest.examples import FileResult, encode_records
from medflow.components.ingest.manifest import LabelManifest
from medflow.components.ingest.nifti import is_nifti, load_nifti, stem
from medflow.components.ingest.nifti_import import volume_id
from medflow.components.ingest.plan import QUARANTINE_DIR, decide, outcome
from medflow.components.ingest.volume_spec import SPEC_NAME, VolumeSpec, prepare
from medflow.core import features as F
from medflow.core.errors import InputError
from medflow.core.files import swap_in_folders

SHARD_NAME = "data_tfrecord-00000-of-00001.gz"
_PSEUDONYM = re.compile(r"P[0-9a-f]{16}")


def is_volume_source(source: str | Path) -> bool:
    """True for a folder that ``medflow import-nifti`` wrote (it holds a volume spec)."""
    return Path(source, SPEC_NAME).is_file()


def read_spec(source: str | Path) -> VolumeSpec:
    path = Path(source, SPEC_NAME)
    try:
        return VolumeSpec.from_json(path.read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a volume spec ({exc}); rerun medflow import-nifti") from exc


def volume_features(prepared, patient: str, source_affine: np.ndarray, spec=None) -> dict:
    """The tf.Example features of one prepared volume (see :mod:`medflow.core.features`)."""
    from medflow.components.dicom.pixels import image_stats

    image = np.ascontiguousarray(prepared.image[..., None], dtype="<f4")
    feats = {name: F.UNKNOWN for name in F.HEADER_STRINGS}
    spacing = np.linalg.norm(source_affine[:3, :3], axis=0)
    feats.update(
        {
            F.PATIENT_ID: patient,
            F.SERIES_UID: patient,
            F.IMAGE: image.tobytes(),
            F.IMAGE_SHAPE: list(image.shape),
            F.IMAGE_DTYPE: b"float32",
            **image_stats(image),
            F.VOLUME_AFFINE: [float(v) for v in prepared.affine.reshape(-1)],
            F.VOLUME_SPACING: [float(v) for v in spacing],
            F.VOLUME_SOURCE_SHAPE: list(prepared.source_shape),
            F.VOLUME_RESAMPLED_SHAPE: list(prepared.resampled_shape),
            F.VOLUME_OFFSET: list(prepared.offset),
            F.VOLUME_ORIENTATION: prepared.orientation,
        }
    )
    if spec is not None:  # the Trainers copy it into the model contract
        feats[F.VOLUME_SPEC] = json.dumps(spec.to_dict(), sort_keys=True)
    if prepared.mask is not None:
        feats[F.MASK] = np.ascontiguousarray(prepared.mask, dtype=np.uint8).tobytes()
    return feats


def _load_image(path: str, relpath: str):
    """(voxels, LPS affine, patient name) of a NIfTI file (named by its file name) or of an
    Enhanced multi-frame DICOM volume (named by its PatientID)."""
    if is_nifti(relpath):
        vol = load_nifti(path)
        return vol.voxels, vol.affine, stem(Path(relpath).name)
    from medflow.components.dicom.volume import assemble_multiframe

    try:
        vol = assemble_multiframe(path)
    except InputError:
        raise
    except Exception as exc:  # pydicom / highdicom on a damaged file
        raise InputError(f"{relpath}: not a readable DICOM volume ({exc})") from exc
    return vol.voxels, vol.affine, f"dicom|{vol.patient_id or relpath}"


def _class_label(manifest: LabelManifest | None, mkey: str | None) -> dict:
    """The example's class label (a manifest ``label`` column), if the manifest has one."""
    if manifest is None or mkey is None or F.LABEL not in manifest.label_columns:
        return {}
    return {F.LABEL: int(manifest.rows[mkey][F.LABEL])}


def process_volume(
    path: str, relpath: str, key: DeidKey, spec: VolumeSpec, manifest: LabelManifest | None
) -> FileResult:
    """One NIfTI image or DICOM volume -> a FileResult with its example record (never
    raises)."""
    mkey = manifest.lookup("", "", "", relpath) if manifest else None
    if manifest is not None and mkey is None:
        return FileResult(relpath, "quarantined", "unlabeled", f"{relpath}: no manifest row")
    try:
        voxels, affine, name = _load_image(path, relpath)
        mask = None
        if manifest is not None and mkey in manifest.masks:
            mask_vol = load_nifti(manifest.masks[mkey], mask=True)
            if mask_vol.voxels.shape != voxels.shape:
                raise InputError(
                    f"{relpath}: mask {Path(mask_vol.path).name} shape "
                    f"{list(mask_vol.voxels.shape)} != image {list(voxels.shape)}; "
                    "resample the mask onto the image grid"
                )
            mask = mask_vol.voxels
    except InputError as exc:
        reason = "mask_mismatch" if "mask" in str(exc) else "unreadable"
        return FileResult(relpath, "quarantined", reason, str(exc))
    patient = name if _PSEUDONYM.fullmatch(name) else volume_id(key, name)
    res = FileResult(relpath, "ok", patient_key=patient)
    prepared = prepare(voxels, affine, spec, mask)
    res.examples = [
        {**volume_features(prepared, patient, affine, spec), **_class_label(manifest, mkey)}
    ]
    res.pixel_hash = hashlib.sha256(voxels.tobytes()).hexdigest()
    res.manifest_key = mkey
    res.split = manifest.splits.get(mkey) if manifest and mkey else None
    res.record_labels = []
    return encode_records(res)


def _inputs(source: Path, out: Path, manifest: LabelManifest | None) -> list[tuple[str, str]]:
    masks = {str(Path(p).resolve()) for p in (manifest.masks.values() if manifest else ())}
    return [
        (path, rel)
        for path, rel in list_inputs(source, exclude=out.resolve())
        if (is_nifti(rel) or rel.lower().endswith(".dcm"))
        and str(Path(path).resolve()) not in masks
    ]


def ingest_volumes(
    source: str | Path,
    out: str | Path,
    key: DeidKey,
    manifest: LabelManifest | None,
    options: IngestOptions,
) -> IngestReport:
    """Ingest the volume folder ``source`` into ``out`` (see the module docstring)."""
    source, out = Path(source), Path(out)
    spec = read_spec(source)
    if manifest is not None:
        manifest.check_splits([name for name, _ in options.splits])
    out.mkdir(parents=True, exist_ok=True)
    inputs = _inputs(source, out, manifest)
    results = [process_volume(p, rel, key, spec, manifest) for p, rel in inputs]
    plan = decide(
        [outcome(i, p, r) for i, ((p, _), r) in enumerate(zip(inputs, results, strict=True))],
        options,
    )
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        _write_shards(staging, plan, results, options)
        copies = dict(_copy_quarantined(plan, str(staging)))
        for entry in plan.files:
            if "copy" in entry:
                entry["copy"] = copies.get(entry["path"], "")
        report = IngestReport(str(source), _options(options, spec), plan.files, plan.splits)
        report.manifest = _manifest_summary(manifest, report)
        names = [options.split_dir.format(split=s) for s, _ in options.splits]
        swap_in_folders(staging, out, [*names, QUARANTINE_DIR])
        doc = report.to_dict()
        doc["volumes"] = _volume_counts(report, manifest)
        write_json_atomic(out / REPORT_NAME, doc)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _write_shards(staging: Path, plan, results: list[FileResult], options: IngestOptions) -> None:
    by_split: dict[str, list[tuple[int, bytes]]] = {}
    for res in results:
        place = plan.placements.get(res.relpath)
        if place is not None:
            by_split.setdefault(place[0], []).extend(
                (place[1] + i, r) for i, r in enumerate(res.records)
            )
    for split, _ in options.splits:
        folder = staging / options.split_dir.format(split=split)
        folder.mkdir(parents=True)
        with open(folder / SHARD_NAME, "wb") as fh:  # in staging: moved in whole later
            for _, record in sorted(by_split.get(split, [])):
                fh.write(record)


def _options(options: IngestOptions, spec: VolumeSpec) -> dict:
    return {"volume_spec": spec.to_dict(), "splits": dict(options.splits)}


def _volume_counts(report: IngestReport, manifest: LabelManifest | None) -> dict:
    c = report.counts
    return {
        "volumes": c["written"],
        "image_files": c["inputs"],
        "mask_files": len(manifest.masks) if manifest else 0,
        "quarantined": c["quarantined"],
        "duplicates": c["duplicates"],
    }
