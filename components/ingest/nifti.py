"""NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel, checked for what a 3D model needs:
three spatial dimensions, a usable affine, and a mask on exactly the image's grid.

Every volume carries an affine in the DICOM convention used by
:mod:`components.dicom.volume`: index (i, j, k, 1) of the stored array -> patient
coordinates in mm, LPS. NIfTI stores RAS, so the first two rows change sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medflow.core.errors import InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Affines of an image and its mask may differ by float noise from the writing tool.
AFFINE_ATOL = 1e-3


def is_nifti(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def stem(name: str) -> str:
    """``case_01.nii.gz`` -> ``case_01``."""
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class NiftiVolume:
    """Voxels (i, j, k) and the LPS affine of one NIfTI file."""

    path: str
    voxels: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def _header(path: str | Path):
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: no such NIfTI file; fix the path in the manifest") from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise InputError(
            f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc}); re-export it"
        ) from exc
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(
            f"{path}: a {len(shape)}D NIfTI (shape {list(img.shape)}); medflow takes one 3D "
            "volume per file: split a 4D series into 3D files (e.g. fslsplit) first"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{path}: the NIfTI affine is singular or not finite; fix the header")
    return img, shape, RAS_TO_LPS @ affine


def nifti_shape(path: str | Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape, LPS affine) from the header only (no voxels read)."""
    _, shape, affine = _header(path)
    return shape, affine


def load_nifti(path: str | Path, *, mask: bool = False) -> NiftiVolume:
    """One 3D volume; a mask must hold non-negative whole numbers (class indices)."""
    img, shape, affine = _header(path)
    data = np.asarray(img.dataobj).reshape(shape)
    if mask:
        if not np.all(np.isfinite(data)) or np.any(data < 0) or np.any(data != np.round(data)):
            raise InputError(
                f"{path}: a mask must hold class indices 0, 1, 2, ... (found other values); "
                "pass the label map, not probabilities"
            )
        return NiftiVolume(str(path), data.astype(np.uint8), affine)
    return NiftiVolume(str(path), data.astype(np.float32), affine)


def check_pair(image: str | Path, mask: str | Path) -> tuple[int, int, int]:
    """Raises unless ``mask`` lies on ``image``'s grid (same shape and affine); returns the
    shape. Reads headers only."""
    shape, affine = nifti_shape(image)
    mshape, maffine = nifti_shape(mask)
    if mshape != shape:
        raise InputError(
            f"{mask}: mask shape {list(mshape)} differs from its image {Path(image).name} "
            f"{list(shape)}; resample the mask onto the image grid"
        )
    if not np.allclose(affine, maffine, atol=AFFINE_ATOL):
        raise InputError(
            f"{mask}: mask affine differs from its image {Path(image).name}'s (another "
            "grid or orientation); resample the mask onto the image grid"
        )
    return shape


def save_nifti(path: str | Path, voxels: np.ndarray, affine_lps: np.ndarray) -> None:
    """Writes ``voxels`` with the LPS affine as NIfTI (atomically: temp file, then rename);
    header text fields are left empty (they can carry identifiers)."""
    import nibabel as nib

    from medflow.core.files import atomic_open

    img = nib.Nifti1Image(voxels, RAS_TO_LPS @ np.asarray(affine_lps, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    with atomic_open(path, "wb") as fh:
        fh.write(_to_bytes(img, suffix))


def _to_bytes(img, suffix: str) -> bytes:
    import gzip

    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if suffix == ".nii.gz" else raw
