"""DICOM display for the review page: frames, window/level, zoom and overlays (no Streamlit).

Window/level applies to Modality-LUT output (e.g. Hounsfield units for CT); MONOCHROME1
is inverted after windowing so bright means dense, as on a reading station.

Segmentation masks (a prediction's ``mask_ref``) are uint8 class indices on the image's
own grid (0 background, 1..K classes): drawn filled or as their contour, one colour per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medflow.components.dicom.masks import read_mask
from medflow.components.dicom.pixels import (
    apply_window,
    header_window,
    image_info,
    modality_values,
)
from medflow.components.dicom.reader import read_dicom
from medflow.core.errors import InputError

# (center, width) presets in Modality-LUT units. "Header" and "Full range" are computed.
PRESETS: dict[str, tuple[float, float]] = {
    "CT lung": (-600.0, 1500.0),
    "CT soft tissue": (40.0, 400.0),
    "CT bone": (480.0, 2500.0),
    "CT brain": (40.0, 80.0),
}
HEADER, FULL_RANGE = "Header", "Full range"


@dataclass(frozen=True)
class Study:
    """Decoded pixels of one instance in Modality-LUT units, ready to window."""

    frames: np.ndarray  # [n_frames, rows, cols] float32 (grey) or [n, rows, cols, 3] uint8 (colour)
    photometric: str
    modality: str
    header_window: tuple[float, float] | None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def is_color(self) -> bool:
        return self.frames.ndim == 4

    def value_range(self) -> tuple[float, float]:
        return float(self.frames.min()), float(self.frames.max())

    def presets(self) -> list[str]:
        """Preset names that make sense for this image, the default first."""
        names = [HEADER] if self.header_window else []
        names.append(FULL_RANGE)
        if self.modality == "CT":
            names += list(PRESETS)
        return names

    def preset_window(self, name: str) -> tuple[float, float]:
        if name == HEADER and self.header_window:
            return self.header_window
        if name in PRESETS:
            return PRESETS[name]
        lo, hi = self.value_range()
        return (lo + hi) / 2.0, max(hi - lo, 1.0)


def load_study(path: str | Path) -> Study:
    """Reads a DICOM file safely and decodes all frames.

    Raises:
        InputError: the file is missing, not usable DICOM, or has no decodable pixels.
    """
    from pydicom.pixels import convert_color_space, pixel_array

    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"image {path} not found (the prediction's image_ref must be a readable path)"
        )
    ds = read_dicom(path)
    info = image_info(ds, name=str(path))
    try:
        arr = pixel_array(ds)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "cannot display"
        raise InputError(f"{path}: pixel data could not be decoded ({exc})") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if info.frames == 1:
        arr = arr[np.newaxis]
    if info.samples == 1 and photometric.startswith("MONOCHROME"):
        frames = modality_values(ds, arr)
    elif info.samples == 3:
        if photometric.startswith("YBR") and photometric != "YBR_FULL_422":
            arr = convert_color_space(arr, photometric, "RGB")
        frames = _to_uint8(arr)
    else:
        frames = arr.astype(np.float32)
    return Study(frames, photometric, str(ds.get("Modality", "")), header_window(ds))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    lo, hi = float(arr.min()), float(arr.max())
    return ((arr - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)


def render(study: Study, frame: int, center: float, width: float) -> np.ndarray:
    """One frame as display pixels (uint8 grey [rows, cols] or RGB [rows, cols, 3]).

    Linear window: values below ``center - width/2`` are black, above ``center + width/2``
    white (inverted for MONOCHROME1).
    """
    if not 0 <= frame < study.n_frames:
        raise InputError(f"frame {frame} out of range (image has {study.n_frames})")
    data = study.frames[frame]
    if study.is_color:
        return data
    scaled = apply_window(data, center, width, invert=study.photometric == "MONOCHROME1")
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def zoom(image: np.ndarray, factor: float, center: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """Crops to 1/factor of each side around ``center`` (fractions of rows, cols)."""
    if factor <= 1.0:
        return image
    rows, cols = image.shape[:2]
    h, w = max(int(rows / factor), 1), max(int(cols / factor), 1)
    top = int(np.clip(center[0] * rows - h / 2, 0, rows - h))
    left = int(np.clip(center[1] * cols - w / 2, 0, cols - w))
    return image[top : top + h, left : left + w]


def load_overlay(ref: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Reads a heatmap (.npy, or an image file) scaled to [0, 1] at ``shape``.

    Raises:
        InputError: the file is missing or unreadable.
    """
    from PIL import Image

    path = Path(ref)
    if not path.is_file():
        raise InputError(f"overlay {path} not found")
    try:
        arr = np.load(path) if path.suffix == ".npy" else np.asarray(Image.open(path).convert("L"))
    except (OSError, ValueError) as exc:
        raise InputError(f"overlay {path} is not a readable .npy or image file: {exc}") from exc
    arr = np.asarray(arr, dtype=np.float32).squeeze()
    if arr.ndim != 2:
        raise InputError(f"overlay {path} must be 2-D, got shape {arr.shape}")
    if arr.shape != shape:
        img = Image.fromarray(arr)
        arr = np.asarray(img.resize((shape[1], shape[0]), Image.BILINEAR), dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def blend(image: np.ndarray, overlay: np.ndarray, opacity: float) -> np.ndarray:
    """Overlays a [0, 1] heatmap in the "jet" colour map, weighted by its value; RGB uint8."""
    from matplotlib import colormaps

    rgb = _rgb(image).astype(np.float32)
    color = colormaps["jet"](overlay)[..., :3].astype(np.float32) * 255.0
    alpha = overlay[..., None] * opacity
    return (rgb * (1 - alpha) + color * alpha + 0.5).astype(np.uint8)


# Class 1, 2, ... colours (cycled): distinct on grey images and for common colour blindness.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (255, 225, 25),  # yellow
    (0, 130, 200),  # blue
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
)
MASK_VIEWS = ("fill", "contour")


def class_color(index: int) -> tuple[int, int, int]:
    """The display colour of class ``index`` (>= 1; 0 is background and not drawn)."""
    return CLASS_COLORS[(index - 1) % len(CLASS_COLORS)]


def load_mask(ref: str | Path) -> np.ndarray:
    """Reads a segmentation mask (PNG or ``.npy``) as uint8 ``[rows, cols]`` class indices.

    A 0/255 mask becomes 0/1 (as for training, :func:`components.dicom.masks.read_mask`).

    Raises:
        InputError: the file is missing, unreadable, not 2-D or holds values outside 0..255.
    """
    path = Path(ref)
    if not path.is_file():
        raise InputError(f"mask {path} not found (the prediction's mask_ref must be a file here)")
    try:
        return read_mask(path, name="prediction")
    except InputError as exc:
        # read_mask speaks of manifests; say it in the terms of a prediction's mask_ref.
        detail = str(exc).removeprefix("prediction: ").removesuffix("; fix the mask column")
        raise InputError(
            f"cannot show the mask: {detail}; mask_ref must name a 2-D PNG or .npy of class "
            "indices on the image's grid"
        ) from exc


def check_mask_shape(mask: np.ndarray, shape: tuple[int, int], ref: str | Path) -> None:
    """Raises InputError unless the mask has the image's rows and columns."""
    if tuple(mask.shape) != tuple(shape):
        raise InputError(
            f"mask {ref} is {mask.shape[0]}x{mask.shape[1]} but the image is "
            f"{shape[0]}x{shape[1]}; a mask must have the image's rows and columns"
        )


def mask_contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Boundary pixels of each labelled region: True where ``mask > 0`` lies within ``width``
    pixels (4-neighbour steps) of another class, the background or the image edge.

    The complement, inside the labelled regions, is the ``width``-fold binary erosion of each
    class (outside the image counts as background).
    """
    interior = mask > 0
    for _ in range(max(int(width), 1)):
        # A pixel stays interior when its 4 neighbours are interior pixels of its class.
        padded = np.pad(interior, 1, constant_values=False)
        labels = np.pad(mask, 1, constant_values=0)
        keep = interior.copy()
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            rows = slice(1 + dy, padded.shape[0] - 1 + dy)
            cols = slice(1 + dx, padded.shape[1] - 1 + dx)
            keep &= padded[rows, cols] & (labels[rows, cols] == mask)
        interior = keep
    return (mask > 0) & ~interior


def contour_width(shape: tuple[int, ...]) -> int:
    """A contour line width that stays visible when the image is scaled to the page."""
    return max(1, max(shape[:2]) // 256)


def blend_mask(
    image: np.ndarray, mask: np.ndarray, opacity: float, view: str = "fill"
) -> np.ndarray:
    """Draws a class-index mask on a display image, one colour per class; returns RGB uint8.

    ``view`` "fill" colours every labelled pixel, "contour" only the regions' boundary
    (:func:`mask_contour`, :func:`contour_width` thick). ``opacity`` 0 leaves the image as is.
    """
    if view not in MASK_VIEWS:
        raise InputError(f"mask view must be one of {', '.join(MASK_VIEWS)}, not {view!r}")
    rgb = _rgb(image)
    if mask.shape != rgb.shape[:2]:
        raise InputError(f"mask shape {mask.shape} differs from the image's {rgb.shape[:2]}")
    shown = (
        mask if view == "fill" else np.where(mask_contour(mask, contour_width(mask.shape)), mask, 0)
    )
    top = int(shown.max())
    if top == 0 or opacity <= 0:
        return rgb.copy()
    colors = np.array([(0, 0, 0)] + [class_color(k) for k in range(1, top + 1)], np.float32)
    if image.ndim == 2:
        # Grey display image: one lookup per pixel in a (class, grey level) -> RGB table,
        # its entries packed as 4-byte words (a few times faster than blending in floats).
        grey = np.arange(256, dtype=np.float32)[None, :, None]
        table = np.zeros((top + 1, 256, 4), np.uint8)
        table[..., :3] = grey * (1 - opacity) + colors[:, None, :] * opacity + 0.5
        table[0, :, :3] = np.arange(256, dtype=np.uint8)[:, None]
        words = table.view(np.uint32).reshape(-1)[(shown.astype(np.uint16) << 8) | image]
        return np.ascontiguousarray(words.view(np.uint8).reshape(*image.shape, 4)[..., :3])
    drawn = shown > 0
    out = rgb.copy()
    under = rgb[drawn].astype(np.float32)
    out[drawn] = (under * (1 - opacity) + colors[shown[drawn]] * opacity + 0.5).astype(np.uint8)
    return out
