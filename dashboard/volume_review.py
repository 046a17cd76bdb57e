"""Reviewing predicted volume masks: the data side of the dashboard's Volumes page
(:mod:`medflow.dashboard.views.volumes`).

A volume review folder holds ``images/<name>.nii.gz`` (the source volumes) and
``masks/<name>.nii.gz`` (label maps on the same grid, as ``medflow predict --nifti-out``
writes them). The page shows one slice at a time in the axial, coronal or sagittal plane
(the volume turned to RAS with nibabel, so the planes are anatomical whatever the file's
axis order), with a window/level and a coloured overlay per label. A reviewer accepts or
rejects each mask; the decision is stored in ``decisions.csv`` with the mask's SHA-256, and
:func:`export_accepted` copies the accepted pairs (unchanged since review) to a folder that
``medflow import-nifti EXPORT/images --masks EXPORT/masks`` turns into the next run's
manifest.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medflow.core.errors import InputError
from medflow.core.files import atomic_write

PLANES = ("axial", "coronal", "sagittal")
_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # the RAS array axis each plane cuts
DECISIONS = "decisions.csv"
_FIELDS = ("name", "decision", "reviewer", "mask_sha256", "time")
# label 1, 2, ... colours (RGB); label k uses COLOURS[(k - 1) % len]
COLOURS = ((230, 60, 60), (60, 200, 80), (70, 130, 240), (240, 200, 40), (200, 80, 220))


def _stem(name: str) -> str:
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem


def list_cases(folder: str | Path) -> list[str]:
    """Names of the volumes in ``folder`` that have a mask of the same name."""
    folder = Path(folder)
    if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
        return []
    masks = {_stem(p.name) for p in (folder / "masks").iterdir() if ".nii" in p.name}
    return sorted(
        _stem(p.name)
        for p in (folder / "images").iterdir()
        if ".nii" in p.name and _stem(p.name) in masks
    )


def _file(folder: Path, kind: str, name: str) -> Path:
    for suffix in (".nii.gz", ".nii"):
        if (path := folder / kind / f"{name}{suffix}").is_file():
            return path
    raise InputError(f"{folder / kind}: no {name}.nii.gz; the case list is out of date, reload")


@dataclass
class Case:
    """One volume and its mask, both turned to RAS (axis 0 right, 1 anterior, 2 superior)."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    mask_sha256: str

    @property
    def labels(self) -> list[int]:
        return [int(v) for v in np.unique(self.mask) if v > 0]

    def slices(self, plane: str) -> int:
        return int(self.image.shape[_AXIS[plane]])


def load_case(folder: str | Path, name: str) -> Case:
    """The case ``name`` of ``folder``; a mask off the image grid is refused."""
    import nibabel as nib

    folder = Path(folder)
    image_path, mask_path = _file(folder, "images", name), _file(folder, "masks", name)
    try:
        image = nib.as_closest_canonical(nib.load(image_path))
        mask = nib.as_closest_canonical(nib.load(mask_path))
        voxels = np.asarray(image.dataobj, dtype=np.float32)
        labels = np.asarray(mask.dataobj).astype(np.uint8)
    except Exception as exc:  # nibabel: not a NIfTI file, truncated data
        raise InputError(f"{folder}/{name}: cannot read the volume or its mask ({exc})") from exc
    if voxels.ndim != 3 or labels.shape != voxels.shape:
        raise InputError(
            f"{mask_path}: mask shape {list(labels.shape)} differs from the image's "
            f"{list(voxels.shape)}; write the mask on the image grid (medflow predict --nifti-out)"
        )
    spacing = tuple(float(v) for v in image.header.get_zooms()[:3])
    digest = hashlib.sha256(mask_path.read_bytes()).hexdigest()
    return Case(name, voxels, labels, spacing, digest)


def default_window(image: np.ndarray) -> tuple[float, float]:
    """(center, width) spanning the 1st to 99th percentile of the volume."""
    lo, hi = (float(v) for v in np.percentile(image, (1, 99)))
    return (lo + hi) / 2, max(hi - lo, 1e-6)


def plane_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Slice ``index`` of ``plane`` as displayed: superior / anterior at the top, the
    patient's right on the left of the screen (radiological convention)."""
    cut = np.take(volume, int(index), axis=_AXIS[plane])
    # RAS axes left in the cut: axial (R, A), coronal (R, S), sagittal (A, S)
    shown = np.rot90(cut)  # second axis (A or S) up
    return shown if plane == "sagittal" else shown[:, ::-1]


def render(
    case: Case,
    plane: str,
    index: int,
    window: tuple[float, float],
    labels_shown: list[int],
    alpha: float = 0.4,
) -> np.ndarray:
    """RGB uint8 of one slice with ``window`` (center, width) and the chosen labels'
    overlay (each label its own colour, blended by ``alpha``)."""
    center, width = window
    grey = plane_slice(case.image, plane, index)
    grey = np.clip((grey - (center - width / 2)) / max(width, 1e-6), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    mask = plane_slice(case.mask, plane, index)
    for label in labels_shown:
        colour = np.array(COLOURS[(int(label) - 1) % len(COLOURS)], np.float32)
        on = mask == label
        rgb[on] = rgb[on] * (1 - alpha) + colour * alpha
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def read_decisions(folder: str | Path) -> dict[str, dict[str, str]]:
    """The latest decision per case name."""
    path = Path(folder) / DECISIONS
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


def decide(folder: str | Path, case: Case, decision: str, reviewer: str) -> None:
    """Record ``accept`` or ``reject`` of ``case``'s mask (rewrites decisions.csv atomically)."""
    if decision not in ("accept", "reject"):
        raise InputError(f"decision {decision!r}: accept or reject")
    rows = read_decisions(folder)
    rows[case.name] = {
        "name": case.name,
        "decision": decision,
        "reviewer": reviewer,
        "mask_sha256": case.mask_sha256,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, _FIELDS)
    writer.writeheader()
    writer.writerows(rows[name] for name in sorted(rows))
    atomic_write(Path(folder) / DECISIONS, text.getvalue())


def export_accepted(folder: str | Path, out: str | Path) -> list[str]:
    """Copy every accepted pair to ``out/images`` and ``out/masks`` (built in a staging
    folder, then moved in whole); a mask changed since its review is refused. Returns the
    exported names."""
    folder, out = Path(folder), Path(out)
    accepted = [r for r in read_decisions(folder).values() if r["decision"] == "accept"]
    if not accepted:
        raise InputError(f"{folder / DECISIONS}: no accepted mask to export; accept some first")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        for kind in ("images", "masks"):
            (staging / kind).mkdir()
        for row in accepted:
            mask = _file(folder, "masks", row["name"])
            if hashlib.sha256(mask.read_bytes()).hexdigest() != row["mask_sha256"]:
                raise InputError(
                    f"{mask}: changed since {row['reviewer']} accepted it; review it again"
                )
            image = _file(folder, "images", row["name"])
            shutil.copy2(image, staging / "images" / image.name)
            shutil.copy2(mask, staging / "masks" / image.name)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(r["name"] for r in accepted)
