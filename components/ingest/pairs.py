"""Ingesting registration pairs: one ``tf.Example`` per (fixed, moving) pair.

Every image a pairs manifest names goes through the usual per-file processing
(:func:`.examples.process_file`: validation, the one PixelSpec, masks, de-identification),
then the pairs are joined. A pair is quarantined with a reason when an image of it is
missing or was quarantined (``missing_image``), a mask file does not exist
(``missing_mask``), the images differ in modality (``modality_mismatch``), in grid or frame
count (``dims_mismatch``: e.g. 2D with 3D), or its manifest split contradicts its patients'
(``split_conflict``). A pair goes to the split of its fixed image's patient; patients
linked by pairs (inter-subject pairs) share one split, so no pair straddles splits.

Example features: the fixed image's header and geometry features (``patient_id``,
``sop_uid``, ``pixel_spacing``, ``resample_*`` ...), ``fixed`` and ``moving`` (raw float32
bytes, ``image_shape``), ``moving_sop_uid``, ``fixed_mask`` / ``moving_mask`` (uint8 bytes
on the model grid; zeros without masks) and ``has_masks`` (1 or 0).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from medflow.components.dicom.deid import DeidKey
from medflow.components.ingest.engine import (
    REPORT_NAME,
    IngestOptions,
    IngestReport,
    _options_dict,
    assign_split,
    list_inputs,
    write_json_atomic,
)
from medflow.components.ingest.examples import (
    FileResult,
    WorkerConfig,
    process_file,
    serialize_example,
)
from medflow.components.ingest.pairs_manifest import PairRow, PairsManifest
from medflow.components.ingest.tfrecord import gzip_record
from medflow.core import features as F
from medflow.core.files import swap_in_folders

FIXED_IMAGE, MOVING_IMAGE = "fixed", "moving"
FIXED_MASK, MOVING_MASK, HAS_MASKS = "fixed_mask", "moving_mask", "has_masks"
MOVING_SOP_UID = "moving_sop_uid"
SHARD_NAME = "data_tfrecord-00000-of-00001.gz"


class PairsIngestReport(IngestReport):
    """An :class:`IngestReport` that also lists every pair and counts pair outcomes."""

    def __init__(self, *args, pairs: list[dict] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.pairs = pairs or []

    @property
    def quarantine_reasons(self) -> dict[str, int]:
        reasons = Counter(super().quarantine_reasons)
        reasons.update(p["reason"] for p in self.pairs if p["status"] == "quarantined")
        return dict(sorted(reasons.items()))

    @property
    def counts(self) -> dict[str, int]:
        status = Counter(p["status"] for p in self.pairs)
        return {
            **super().counts,
            "pairs": len(self.pairs),
            "pairs_written": status["written"],
            "pairs_quarantined": status["quarantined"],
        }

    def to_dict(self) -> dict:
        return {**super().to_dict(), "pairs": self.pairs}


def ingest_pairs(
    source: str | Path,
    out: str | Path,
    key: DeidKey,
    manifest: PairsManifest,
    options: IngestOptions,
) -> PairsIngestReport:
    """Ingest the images of ``manifest``'s pairs under ``source`` into ``out``: one
    example per written pair, in ``<split>/data_tfrecord-00000-of-00001.gz``; the report
    (``ingest_report.json``) lists every input file and every pair."""
    source, out = Path(source), Path(out)
    manifest.check_splits([name for name, _ in options.splits])
    out.mkdir(parents=True, exist_ok=True)
    inputs = list_inputs(source, exclude=out.resolve())
    cfg = WorkerConfig(
        key, options.pixel, options.limits, _existing_masks(manifest), *_burned_in(options)
    )
    results = _process_all(inputs, cfg, options.workers)
    images, files = _index_images(results)
    pairs, examples = _join_pairs(manifest, images, options)
    _mark_unused(files, pairs, images)
    split_dirs = [options.split_dir.format(split=s) for s, _ in options.splits]
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        for (name, _), folder in zip(options.splits, split_dirs, strict=True):
            (staging / folder).mkdir()
            if not examples[name]:
                continue
            with open(staging / folder / SHARD_NAME, "wb") as fh:
                for feats in examples[name]:
                    fh.write(gzip_record(serialize_example(feats)))
        swap_in_folders(staging, out, split_dirs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report = PairsIngestReport(
        str(source), _options_dict(options), files, _split_summary(examples), pairs=pairs
    )
    report.manifest = {"source": manifest.source, "kind": "pairs", "rows": len(manifest.pairs)}
    write_json_atomic(out / REPORT_NAME, report.to_dict())
    return report


def _burned_in(options: IngestOptions) -> tuple[bool, bool]:
    return options.allow_burned_in, options.scan_burned_in


def _existing_masks(manifest: PairsManifest) -> PairsManifest:
    """The manifest without mask files that do not exist (their pairs are quarantined as
    ``missing_mask``; the images themselves stay readable for other pairs)."""
    import dataclasses

    masks = {k: p for k, p in manifest.masks.items() if os.path.isfile(p)}
    return dataclasses.replace(manifest, masks=masks)


def _process_all(inputs, cfg: WorkerConfig, workers: int) -> list[FileResult]:
    paths, relpaths = [p for p, _ in inputs], [r for _, r in inputs]
    if workers <= 1 or len(inputs) < 2:
        return [process_file(p, r, cfg) for p, r in inputs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(process_file, paths, relpaths, [cfg] * len(paths), chunksize=4))


def _index_images(results: list[FileResult]) -> tuple[dict[str, FileResult], list[dict]]:
    """(manifest key -> the first processed image for it, the report's file entries)."""
    images: dict[str, FileResult] = {}
    files = []
    for res in results:
        entry: dict = {"path": res.relpath}
        if res.status != "ok":
            reason = "unpaired" if res.reason == "unlabeled" else res.reason
            entry.update(status="quarantined", reason=reason, message=res.message)
        elif res.manifest_key in images:
            entry.update(status="duplicate", duplicate_of=images[res.manifest_key].relpath)
        else:
            images[res.manifest_key] = res
            entry.update(status="written", manifest_key=res.manifest_key)
        files.append(entry)
    return images, files


def _mark_unused(files: list[dict], pairs: list[dict], images: dict[str, FileResult]) -> None:
    """Images read fine whose every pair was quarantined are quarantined too (each input
    ends in one bucket; ``written`` means: in a written example)."""
    used = {p[k] for p in pairs if p["status"] == "written" for k in (FIXED_IMAGE, MOVING_IMAGE)}
    for entry in files:
        if entry["status"] == "written" and entry["manifest_key"] not in used:
            entry.update(
                status="quarantined",
                reason="pair_quarantined",
                message=f"{entry['path']}: every pair naming it was quarantined (see 'pairs')",
            )


def _join_pairs(manifest: PairsManifest, images: dict[str, FileResult], options: IngestOptions):
    """(the report's pair entries, split -> example feature dicts)."""
    split_of = _component_splits(manifest, images, options)
    entries, examples = [], {name: [] for name, _ in options.splits}
    for row in manifest.pairs:
        entry = {"line": row.line, FIXED_IMAGE: row.fixed, MOVING_IMAGE: row.moving}
        problem = _pair_problem(row, images, split_of)
        if problem:
            entry.update(status="quarantined", reason=problem[0], message=problem[1])
        else:
            fixed, moving = images[row.fixed], images[row.moving]
            split = split_of[fixed.patient_key]
            examples[split].append(_pair_features(fixed, moving, row))
            entry.update(status="written", split=split, patient_id=fixed.patient_key)
        entries.append(entry)
    return entries, examples


def _pair_problem(row: PairRow, images: dict, split_of: dict) -> tuple[str, str] | None:
    where = f"pairs manifest line {row.line}"
    for name, key in ((FIXED_IMAGE, row.fixed), (MOVING_IMAGE, row.moving)):
        if key not in images:
            return "missing_image", (
                f"{where}: {name} image {key!r} is not among the readable input files "
                "(missing, or quarantined: see 'files'); add it or drop the pair"
            )
    for name, mask in ((FIXED_MASK, row.fixed_mask), (MOVING_MASK, row.moving_mask)):
        if mask is not None and not os.path.isfile(mask):
            return "missing_mask", f"{where}: {name} file {mask} does not exist; add it"
    if (row.fixed_mask is None) != (row.moving_mask is None):
        return "missing_mask", f"{where}: give both fixed_mask and moving_mask, or neither"
    fixed, moving = images[row.fixed].examples, images[row.moving].examples
    modalities = (fixed[0][F.MODALITY], moving[0][F.MODALITY])
    if modalities[0] != modalities[1]:
        return "modality_mismatch", (
            f"{where}: fixed is {modalities[0]} but moving is {modalities[1]}; pair images "
            "of one modality"
        )
    dims = [(len(ex), ex[0][F.ORIG_ROWS], ex[0][F.ORIG_COLS]) for ex in (fixed, moving)]
    if dims[0] != dims[1] or dims[0][0] != 1:
        return "dims_mismatch", (
            f"{where}: fixed has {dims[0][0]} frame(s) of {dims[0][1]}x{dims[0][2]}, moving "
            f"{dims[1][0]} of {dims[1][1]}x{dims[1][2]}; pair single-frame 2D images of one grid"
        )
    want = split_of.get(images[row.fixed].patient_key)
    if row.split is not None and row.split != want:
        return "split_conflict", (
            f"{where}: split {row.split!r} but its patients are in {want!r} (an earlier "
            "pair of the same patients); give linked pairs one split"
        )
    return None


def _component_splits(manifest: PairsManifest, images: dict, options: IngestOptions) -> dict:
    """Patient pseudonym -> split: patients linked by a pair share the split of the first
    pair's manifest ``split`` or else the hash of their smallest pseudonym."""
    parent: dict[str, str] = {}

    def root(p: str) -> str:
        while parent.setdefault(p, p) != p:
            p = parent[p]
        return p

    chosen: dict[str, str] = {}
    for row in manifest.pairs:
        if row.fixed in images and row.moving in images:
            a, b = root(images[row.fixed].patient_key), root(images[row.moving].patient_key)
            parent[max(a, b)] = min(a, b)
    for row in manifest.pairs:
        if row.fixed in images and row.split:
            chosen.setdefault(root(images[row.fixed].patient_key), row.split)
    return {p: chosen.get(root(p)) or assign_split(root(p), options.splits) for p in list(parent)}


def _pair_features(fixed: FileResult, moving: FileResult, row: PairRow) -> dict:
    fx, mv = fixed.examples[0], moving.examples[0]
    feats = {k: v for k, v in fx.items() if k not in (F.IMAGE, F.MASK)}
    feats[FIXED_IMAGE], feats[MOVING_IMAGE] = fx[F.IMAGE], mv[F.IMAGE]
    feats[MOVING_SOP_UID] = mv[F.SOP_UID]
    has = row.fixed_mask is not None and row.moving_mask is not None
    empty = np.zeros(fx[F.IMAGE_SHAPE][:2], np.uint8).tobytes()
    feats[FIXED_MASK] = fx[F.MASK] if has else empty
    feats[MOVING_MASK] = mv[F.MASK] if has else empty
    feats[HAS_MASKS] = int(has)
    return feats


def _split_summary(examples: dict[str, list[dict]]) -> dict:
    return {
        name: {
            "examples": len(feats),
            "patients": len({f[F.PATIENT_ID] for f in feats}),
            "labels": {},
            "shards": 1,
        }
        for name, feats in examples.items()
    }
