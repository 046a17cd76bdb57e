"""``medflow import-nifti``: a folder of NIfTI volumes (+ a folder of masks of the same
names) -> pseudonymised copies, a label manifest and the volume spec ingestion reads.

Output (all or nothing: every pair is checked before anything is written):

- ``OUT/images/<id>.nii.gz`` and ``OUT/masks/<id>.nii.gz``: the volumes re-saved with empty
  header text fields (``descrip``, ``aux_file`` can carry identifiers); ``<id>`` is a
  pseudonym keyed by the de-identification key, like DICOM patient IDs. The source has no
  subject IDs, so each volume stands for its own patient (a subject with two volumes can
  land in two splits; give a ``split`` column by subject when you know them).
- ``OUT/labels.csv``: ``path`` (key, relative to OUT), ``mask``, ``split``, ``_id``.
- ``OUT/volume_spec.json``: the :class:`VolumeSpec` that ``medflow ingest`` / ``medflow run``
  use for this folder (target spacing and the fixed volume grid).
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np

from medflow.components.dicom.keys import DeidKey
from medflow.components.ingest.nifti import check_pair, is_nifti, load_nifti, save_nifti, stem
from medflow.components.ingest.plan import assign_split
from medflow.components.ingest.volume_spec import SPEC_NAME, VolumeSpec
from medflow.core.errors import InputError
from medflow.core.files import atomic_write, swap_in_folders

MAX_SHOWN = 5


def volume_id(key: DeidKey, name: str) -> str:
    """The pseudonym of one volume (same key and name -> same id)."""
    return "P" + key.digest("patient", f"nifti|{name}").hex()[:16]


def _pairs(images_dir: Path, masks_dir: Path | None) -> list[tuple[Path, Path | None]]:
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: not a folder of NIfTI images")
    images = sorted(p for p in images_dir.iterdir() if p.is_file() and is_nifti(p.name))
    if not images:
        raise InputError(f"{images_dir}: no .nii or .nii.gz files")
    if masks_dir is None:
        return [(p, None) for p in images]
    masks = {stem(p.name): p for p in masks_dir.iterdir() if is_nifti(p.name)}
    missing = [p.name for p in images if stem(p.name) not in masks]
    if missing:
        raise InputError(
            f"{masks_dir}: no mask for {', '.join(missing[:MAX_SHOWN])}"
            f"{' ...' if len(missing) > MAX_SHOWN else ''} ({len(missing)} images); give each "
            "image a mask of the same name"
        )
    return [(p, masks[stem(p.name)]) for p in images]


def check_all(pairs: list[tuple[Path, Path | None]]) -> list[tuple[int, int, int]]:
    """Shapes of all pairs (headers only); one InputError listing every bad pair."""
    shapes, errors = [], []
    for image, mask in pairs:
        try:
            shapes.append(check_pair(image, mask) if mask else _image_shape(image))
        except InputError as exc:
            errors.append(str(exc))
    if errors:
        more = f" (and {len(errors) - MAX_SHOWN} more)" if len(errors) > MAX_SHOWN else ""
        raise InputError(f"{'; '.join(errors[:MAX_SHOWN])}{more}; nothing was written")
    return shapes


def _image_shape(path: Path) -> tuple[int, int, int]:
    from medflow.components.ingest.nifti import nifti_shape

    return nifti_shape(path)[0]


def import_nifti(
    images_dir: str | Path,
    masks_dir: str | Path | None,
    out: str | Path,
    key: DeidKey,
    *,
    splits: tuple[tuple[str, float], ...] = (("train", 0.8), ("eval", 0.2)),
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """Writes the import (see the module docstring); returns ``OUT/labels.csv``."""
    images_dir, out = Path(images_dir), Path(out)
    pairs = _pairs(images_dir, Path(masks_dir) if masks_dir else None)
    shapes = check_all(pairs)
    first = load_nifti(pairs[0][0])
    spec = VolumeSpec.for_shapes(shapes, spacing or first.spacing, first.spacing)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        rows = _write_volumes(pairs, staging, key, splits)
        swap_in_folders(staging, out, ["images", "masks"] if masks_dir else ["images"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write(out / SPEC_NAME, spec.to_json())
    manifest = out / "labels.csv"
    atomic_write(manifest, _csv(rows, with_masks=masks_dir is not None))
    return manifest


def _write_volumes(pairs, staging: Path, key: DeidKey, splits) -> list[dict]:
    (staging / "images").mkdir()
    (staging / "masks").mkdir()
    rows = []
    for image, mask in pairs:
        vid = volume_id(key, stem(image.name))
        vol = load_nifti(image)
        save_nifti(staging / "images" / f"{vid}.nii.gz", vol.voxels, vol.affine)
        row = {"path": f"images/{vid}.nii.gz", "split": assign_split(vid, splits), "_id": vid}
        if mask is not None:
            m = load_nifti(mask, mask=True)
            save_nifti(staging / "masks" / f"{vid}.nii.gz", m.voxels, m.affine)
            row["mask"] = f"masks/{vid}.nii.gz"
        rows.append(row)
    return rows


def _csv(rows: list[dict], *, with_masks: bool) -> str:
    columns = ["path", *(["mask"] if with_masks else []), "split", "_id"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["path"]))
    return buf.getvalue()


def describe(manifest: Path) -> str:
    """One line for the terminal: volumes per split."""
    with manifest.open() as fh:
        counts = np.unique([r["split"] for r in csv.DictReader(fh)], return_counts=True)
    parts = ", ".join(f"{name} {n}" for name, n in zip(*counts, strict=True))
    return f"wrote {sum(counts[1])} volumes ({parts}) and {manifest}"
