"""VolumeSpec: what a 3D model input looks like (the volume counterpart of PixelSpec):
target voxel spacing, the fixed grid every volume is padded or cropped to (centred), and
the intensity normalisation (per-volume percentiles, or a HU window for CT).

:func:`prepare` applies it and returns the affine of the new grid, so every output can be
mapped back to the source volume (:func:`restore` undoes the padding/cropping).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

SPEC_NAME = "volume_spec.json"
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS <-> RAS (its own inverse)
GRID_MULTIPLE = 16  # a 3D U-Net of depth <= 4 divides every side


@dataclass(frozen=True)
class VolumeSpec:
    """Attributes:
    spacing: target voxel spacing (mm) per array axis.
    size: the fixed grid (voxels per axis) after resampling; centred pad or crop.
    percentiles: (low, high) per-volume percentiles mapped to 0 and 1 (MR: scales differ
        between volumes), unless ``hu_window`` is set.
    hu_window: (center, width) for CT: values windowed and scaled to [0, 1].
    """

    spacing: tuple[float, float, float]
    size: tuple[int, int, int]
    percentiles: tuple[float, float] = (0.5, 99.5)
    hu_window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if len(self.size) != 3 or min(self.size) < 1 or len(self.spacing) != 3:
            raise ValueError(f"VolumeSpec: size {self.size} / spacing {self.spacing} need 3 axes")
        if min(self.spacing) <= 0:
            raise ValueError(f"VolumeSpec: spacing {self.spacing} must be positive")

    @classmethod
    def for_shapes(cls, shapes, spacing, source_spacing) -> VolumeSpec:
        """The smallest grid (a multiple of 16 per axis) holding every shape once resampled
        from ``source_spacing`` to ``spacing``."""
        scale = np.asarray(source_spacing, float) / np.asarray(spacing, float)
        biggest = np.ceil(np.max(np.asarray(shapes), axis=0) * scale)
        size = tuple(int(math.ceil(s / GRID_MULTIPLE) * GRID_MULTIPLE) for s in biggest)
        return cls(tuple(float(s) for s in spacing), size)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VolumeSpec:
        d = json.loads(text)
        window = d.get("hu_window")
        return cls(
            spacing=tuple(float(v) for v in d["spacing"]),
            size=tuple(int(v) for v in d["size"]),
            percentiles=tuple(float(v) for v in d.get("percentiles", (0.5, 99.5))),
            hu_window=tuple(float(v) for v in window) if window else None,
        )


def normalise(voxels: np.ndarray, spec: VolumeSpec) -> np.ndarray:
    """Intensities to about [0, 1]: a HU window, else the volume's own percentiles."""
    v = voxels.astype(np.float32)
    if spec.hu_window is not None:
        center, width = spec.hu_window
        return np.clip((v - (center - width / 2)) / width, 0.0, 1.0)
    lo, hi = np.percentile(v, spec.percentiles)
    return np.clip((v - lo) / max(float(hi - lo), 1e-6), -0.5, 1.5).astype(np.float32)


def _resample(voxels: np.ndarray, factors: np.ndarray, order: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.zoom(voxels, factors, order=order, mode="nearest", grid_mode=True)


def _pad_crop(a: np.ndarray, size, offset) -> np.ndarray:
    """``a`` placed at ``offset`` (may be negative: cropped) in a zero grid of ``size``."""
    out = np.zeros(size, dtype=a.dtype)
    src = tuple(
        slice(max(0, -o), min(n, s - o)) for n, s, o in zip(a.shape, size, offset, strict=True)
    )
    dst = tuple(
        slice(max(0, o), max(0, o) + (sl.stop - sl.start))
        for o, sl in zip(offset, src, strict=True)
    )
    out[dst] = a[src]
    return out


@dataclass
class PreparedVolume:
    """A volume on the spec's grid: ``image`` float32, ``mask`` uint8 or None, ``affine``
    of the grid (LPS), ``offset`` of the (resampled) source inside it, ``source_shape``."""

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    offset: tuple[int, int, int]
    source_shape: tuple[int, int, int]
    resampled_shape: tuple[int, int, int]
    orientation: str = "RAS"  # axis codes of the source array (before canonical order)


def canonical(voxels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """``voxels`` in the canonical (RAS) axis order, its LPS affine, and the source's axis
    codes: a DICOM series (slice, row, column) and a NIfTI (i, j, k) of the same anatomy
    reach the model the same way round (nibabel's orientation tools)."""
    from nibabel import orientations as orient

    ras = _LPS_RAS @ affine
    ornt = orient.io_orientation(ras)
    codes = "".join(orient.aff2axcodes(ras))
    turned = orient.apply_orientation(voxels, ornt)
    return turned, affine @ orient.inv_ornt_aff(ornt, voxels.shape), codes


def prepare(voxels: np.ndarray, affine: np.ndarray, spec: VolumeSpec, mask=None) -> PreparedVolume:
    """Turn to the canonical axis order, resample to ``spec.spacing`` (linear; masks
    nearest), normalise, and centre on ``spec.size``; the returned affine maps the new
    grid's indices to the same LPS points."""
    source_shape = tuple(int(s) for s in voxels.shape)
    voxels, affine, codes = canonical(voxels, affine)
    if mask is not None:
        mask = _turn(mask, codes)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    factors = spacing / np.asarray(spec.spacing)
    image = normalise(voxels, spec)
    new_affine = np.array(affine, dtype=np.float64)
    if np.max(np.abs(factors - 1)) > 0.01:
        image = _resample(image, factors, 1)
        mask = None if mask is None else _resample(mask, factors, 0)
        # zoom(grid_mode=True) keeps the volume's outer edges: new voxel i is centred at
        # old index (i + 0.5) / f - 0.5
        new_affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ (0.5 / factors - 0.5)
        new_affine[:3, :3] = affine[:3, :3] / factors
    offset = tuple(int((s - n) // 2) for s, n in zip(spec.size, image.shape, strict=True))
    new_affine[:3, 3] = new_affine[:3, 3] - new_affine[:3, :3] @ np.asarray(offset, float)
    return PreparedVolume(
        image=_pad_crop(image, spec.size, offset),
        mask=None if mask is None else _pad_crop(mask.astype(np.uint8), spec.size, offset),
        affine=new_affine,
        offset=offset,
        source_shape=source_shape,
        resampled_shape=tuple(int(s) for s in image.shape),
        orientation=codes,
    )


def _turn(arr: np.ndarray, codes: str) -> np.ndarray:
    """``arr`` (source axis order ``codes``) in the canonical order."""
    from nibabel import orientations as orient

    return orient.apply_orientation(arr, orient.axcodes2ornt(tuple(codes)))


def restore(grid: np.ndarray, offset, resampled_shape, source_shape, orientation="RAS"):
    """A label map on the spec's grid back onto the source grid (nearest neighbour, then
    the source's own axis order ``orientation``)."""
    from nibabel import orientations as orient

    ornt = orient.axcodes2ornt(tuple(orientation))
    canonical_shape = [0, 0, 0]
    for axis, (target, _) in enumerate(ornt):
        canonical_shape[int(target)] = int(source_shape[axis])
    back = _pad_crop(grid, resampled_shape, tuple(-o for o in offset))
    if list(back.shape) != canonical_shape:
        factors = np.asarray(canonical_shape, float) / np.asarray(back.shape, float)
        back = _resample(back, factors, 0)
    identity = orient.axcodes2ornt(("R", "A", "S"))
    return orient.apply_orientation(back, orient.ornt_transform(identity, ornt))
