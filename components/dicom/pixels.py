"""DICOM pixels to model input: the one preprocessing used by ingestion and serving clients.

Order of operations (DICOM PS3.3 C.11 "grayscale pipeline"): decode → Modality LUT
(RescaleSlope/Intercept or LUT, e.g. to HU) → optional VOI window → MONOCHROME1
inversion → colour to luma (or grey to RGB) → resample to the target size keeping the
physical aspect ratio (pixel spacing), centred and padded. Output is float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from medflow.components.dicom.codestream import check_frames
from medflow.components.dicom.decode import decode_frame, required
from medflow.components.dicom.errors import DicomRejected
from medflow.components.dicom.reader import HeaderView, ReadLimits, header_view, read_dicom
from medflow.core.features import IMAGE_STATS
from medflow.core.pixel_spec import PixelSpec


@dataclass(frozen=True)
class Geometry:
    """Where the model-input pixels came from (to map results back onto the image)."""

    orig_rows: int
    orig_cols: int
    n_frames: int
    frame_index: int
    pixel_spacing: tuple[float, float] | None  # mm of one stored (resampled) pixel
    scale: float  # stored pixels per original pixel, along rows
    pad: tuple[int, int]  # (top, left) padding added after resampling


# Pixel spacings at or above this (mm) are not physical: treated as absent.
MAX_SPACING_MM = 1e4
# Samples per pixel each photometric interpretation needs (PS3.3 C.7.6.3.1.2); decoders
# given anything else fail, some by aborting the process.
_SAMPLES_OF = {"MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE": 1, "RGB": 3, "YBR": 3}


@dataclass(frozen=True)
class ImageInfo:
    """Validated image attributes of an instance."""

    rows: int
    cols: int
    frames: int
    samples: int
    bits_allocated: int
    encapsulated: bool


def image_info(
    ds: pydicom.Dataset | HeaderView, max_pixels: int = 2**28, name: str = ""
) -> ImageInfo:
    """Check the declared image size before any decoding.

    Raises:
        DicomRejected: no pixels, invalid dimensions, over the cap, or a PixelData length
            that does not match the declared size.
    """
    h = header_view(ds)
    if "PixelData" not in h and "FloatPixelData" not in h and "DoubleFloatPixelData" not in h:
        if "Rows" in h and "Columns" in h:  # an image whose file ends before its pixels
            raise DicomRejected(
                "truncated",
                f"{name}: declares a {h.get('Rows')}x{h.get('Columns')} image but the file "
                "ends before its PixelData; the file is truncated — re-export it from the source",
            )
        raise DicomRejected(
            "no_pixel_data", f"{name}: no PixelData (SOP class {h.get('SOPClassUID', '?')})"
        )
    try:
        rows, cols = int(required(h, "Rows")), int(required(h, "Columns"))
        bits = int(required(h, "BitsAllocated"))
        samples = int(h.get("SamplesPerPixel", 1) or 1)
        frames = int(h.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomRejected(
            "bad_geometry", f"{name}: missing or invalid Rows/Columns/BitsAllocated ({exc})"
        ) from exc
    if min(rows, cols, bits, samples, frames) < 1 or bits not in (1, 8, 16, 32, 64):
        raise DicomRejected(
            "bad_geometry",
            f"{name}: invalid image attributes rows={rows} cols={cols} frames={frames} "
            f"samples={samples} bits={bits}",
        )
    photometric = str(h.get("PhotometricInterpretation", "") or "")
    expected_samples = _SAMPLES_OF.get(photometric.split("_")[0])
    if expected_samples is not None and samples != expected_samples:
        raise DicomRejected(
            "bad_geometry",
            f"{name}: PhotometricInterpretation {photometric} needs {expected_samples} "
            f"sample(s) per pixel but the file declares {samples}",
        )
    total = rows * cols * frames * samples
    if total > max_pixels:
        raise DicomRejected(
            "too_many_pixels",
            f"{name}: declares {rows}x{cols}x{frames} frames x{samples} samples = {total} pixels, "
            f"over the cap of {max_pixels} (raise --max-pixels if the image is genuine)",
        )
    encapsulated = _encapsulated(h.ds, name)
    if encapsulated and "PixelData" in h:
        check_frames(h.get("PixelData"), rows, cols, samples, max_pixels, name)
    if not encapsulated and "PixelData" in h:
        expected = math.ceil(total * bits / 8)
        actual = len(h.get("PixelData"))
        if actual < expected:
            raise DicomRejected(
                "pixel_length_mismatch",
                f"{name}: PixelData holds {actual} bytes but {rows}x{cols}x{frames}x{samples} "
                f"at {bits} bits needs {expected}",
            )
    return ImageInfo(rows, cols, frames, samples, bits, encapsulated)


def _encapsulated(ds: pydicom.Dataset, name: str) -> bool:
    """Whether the pixel data is compressed (encapsulated), by the file's transfer syntax."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not syntax:
        return False
    try:
        return bool(syntax.is_compressed)
    except (AttributeError, ValueError):  # not read as a UID (a wrong VR), or not a syntax's
        raise DicomRejected(
            "unreadable",
            f"{name}: the file meta's TransferSyntaxUID is not a transfer syntax UID ({syntax!r})",
        ) from None


def pixel_spacing(ds: pydicom.Dataset | HeaderView) -> tuple[float, float] | None:
    """(row, col) spacing in mm from PixelSpacing or ImagerPixelSpacing, if valid."""
    h = header_view(ds)
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = h.get(keyword)
        try:
            if value is not None and len(value) == 2:
                row, col = float(value[0]), float(value[1])
                # finite and physical (an overflowing 1e308 turns resampling into NaN)
                if 0 < row < MAX_SPACING_MM and 0 < col < MAX_SPACING_MM:
                    return row, col
        except (TypeError, ValueError):
            continue
    return None


def frame_indices(n_frames: int, frames: str) -> list[int]:
    if frames == "all":
        return list(range(n_frames))
    return [0 if frames == "first" else n_frames // 2]


def to_model_input(
    ds: pydicom.Dataset | HeaderView, spec: PixelSpec, name: str = ""
) -> list[tuple[np.ndarray, Geometry]]:
    """Turn an instance into model-input arrays, one per selected frame.

    Returns:
        A list of (float32 array [rows, cols, channels], Geometry).

    Raises:
        DicomRejected: the image cannot be used (see :mod:`components.dicom.errors`).
    """
    h = header_view(ds)
    info = image_info(h, spec.max_pixels, name)
    spacing = pixel_spacing(h)
    out = []
    for index in frame_indices(info.frames, spec.frames):
        frame = _checked_shape(
            decode_frame(h, index if info.frames > 1 else None, name), info, name
        )
        values = _grayscale_pipeline(h, frame, spec)
        values = _to_channels(values, spec.channels)
        resized, geometry = _resample(values, spec.size, spacing)
        out.append(
            (
                resized,
                Geometry(
                    info.rows, info.cols, info.frames, index, geometry[0], geometry[1], geometry[2]
                ),
            )
        )
    return out


def load_model_input(
    path: str | Path, spec: PixelSpec, limits: ReadLimits | None = None
) -> list[tuple[np.ndarray, Geometry]]:
    """Read a DICOM file safely and turn it into model input (see :func:`to_model_input`)."""
    limits = limits or ReadLimits(max_pixels=spec.max_pixels)
    return to_model_input(read_dicom(path, limits), spec, str(path))


def modality_values(h: HeaderView | pydicom.Dataset, arr: np.ndarray) -> np.ndarray:
    """Stored values -> Modality-LUT output (e.g. HU) as float32, for monochrome images;
    other images' values as they are. The one implementation for ingestion, the serving
    client and the review viewer."""
    photometric = str(h.get("PhotometricInterpretation", "MONOCHROME2"))
    is_mono = photometric.startswith("MONOCHROME")
    if is_mono and "ModalityLUTSequence" in h:
        from pydicom.pixels import apply_modality_lut

        ds = h.ds if isinstance(h, HeaderView) else h
        return apply_modality_lut(arr, ds).astype(np.float32, copy=False)
    if is_mono and "RescaleSlope" in h and "RescaleIntercept" in h:
        # apply_modality_lut's rescale (float64, then float32), without its look-ups
        slope, intercept = h.get("RescaleSlope"), h.get("RescaleIntercept")
        if slope == 1 and intercept == 0:
            return arr.astype(np.float32)  # integers: the same values, one pass
        return (arr.astype(np.float64) * slope + intercept).astype(np.float32)
    return arr.astype(np.float32)


def apply_window(values: np.ndarray, center: float, width: float, *, invert: bool) -> np.ndarray:
    """Linear VOI window to [0, 1]: below ``center - width/2`` is 0, above
    ``center + width/2`` is 1; ``invert`` (MONOCHROME1) makes bright mean dense."""
    lo = center - width / 2.0
    scaled = np.clip((values - lo) / max(width, 1e-6), 0.0, 1.0)
    return 1.0 - scaled if invert else scaled


def _grayscale_pipeline(h: HeaderView, arr: np.ndarray, spec: PixelSpec) -> np.ndarray:
    photometric = str(h.get("PhotometricInterpretation", "MONOCHROME2"))
    is_mono = photometric.startswith("MONOCHROME")
    values = modality_values(h, arr)
    window = _window(h, spec.window) if is_mono else None
    if window is not None:
        values = apply_window(values, *window, invert=photometric == "MONOCHROME1")
    elif photometric == "MONOCHROME1":
        lo, hi = _stored_range(h)
        values = (lo + hi) - values
    return values


def image_stats(image: np.ndarray) -> dict[str, float]:
    """``features.IMAGE_STATS`` of a model input: mean and population std (float64 sums),
    min and max. Plain C reductions: ``mean()``/``std()`` cost ~45 µs more per small image
    in numpy's Python-level wrappers, paid once per ingested frame."""
    flat = np.ascontiguousarray(image, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        raise ValueError("image_stats of an empty image")
    mean = np.add.reduce(flat, dtype=np.float64) / flat.size
    centred = flat - np.float32(mean)
    std = math.sqrt(float(np.dot(centred, centred)) / flat.size)
    minimum, maximum = float(np.minimum.reduce(flat)), float(np.maximum.reduce(flat))
    return dict(zip(IMAGE_STATS, (float(mean), std, minimum, maximum), strict=True))


def _window(ds: HeaderView, window: str | tuple[float, float] | None) -> tuple[float, float] | None:
    if window is None:
        return None
    if window != "header":
        return float(window[0]), float(window[1])
    return header_window(ds)


def header_window(ds: HeaderView | pydicom.Dataset) -> tuple[float, float] | None:
    """The instance's first VOI window (center, width >= 1), None without a usable one
    (multi-valued: the first pair is the modality's recommended default)."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    first = lambda v: float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v)  # noqa: E731
    try:
        return first(center), max(first(width), 1.0)
    except (TypeError, ValueError):
        return None


def _stored_range(ds: HeaderView) -> tuple[float, float]:
    """The Modality-LUT range of the stored values (for MONOCHROME1 inversion)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    a, b = lo * slope + intercept, hi * slope + intercept
    return min(a, b), max(a, b)


def _checked_shape(frame: np.ndarray, info: ImageInfo, name: str) -> np.ndarray:
    """A decoded frame must have the header's rows x columns (x 1 or 3 samples): a decoder can
    return another shape for a file whose header and pixel data disagree; refused, never
    reshaped into an image it is not."""
    samples_ok = frame.ndim == 2 or (frame.ndim == 3 and frame.shape[-1] in (1, 3))
    if not samples_ok or frame.shape[:2] != (info.rows, info.cols):
        raise DicomRejected(
            "decode_error",
            f"{name}: the decoded frame has shape {frame.shape}, the header declares "
            f"{info.rows}x{info.cols} with {info.samples} sample(s) per pixel; "
            "re-export the file from its source",
        )
    return frame


def _to_channels(values: np.ndarray, channels: int) -> np.ndarray:
    if values.ndim == 3 and values.shape[-1] == 3:
        if channels == 3:
            return values
        luma = values[..., 0] * 0.299 + values[..., 1] * 0.587 + values[..., 2] * 0.114
        return luma[..., None].astype(np.float32)
    values = values.reshape(values.shape[0], values.shape[1], 1)
    return np.repeat(values, 3, axis=-1) if channels == 3 else values


def resample_mask(
    mask: np.ndarray, size: tuple[int, int] | None, spacing: tuple[float, float] | None
) -> np.ndarray:
    """A label mask ``[rows, cols]`` onto the model-input grid of an image of the same size.

    Same geometry as the image (aspect kept in mm, centred, padded), nearest neighbour so
    label values stay labels; padding is background (0).
    """
    out, _ = _resample(mask.astype(np.float32)[..., None], size, spacing, Image.NEAREST, 0.0)
    return out[..., 0].astype(np.uint8)


def _resample(
    values: np.ndarray,
    size: tuple[int, int] | None,
    spacing: tuple[float, float] | None,
    method: int = Image.BILINEAR,
    fill: float | None = None,
) -> tuple[np.ndarray, tuple[tuple[float, float] | None, float, tuple[int, int]]]:
    rows, cols = values.shape[:2]
    if size is None or (
        tuple(size) == (rows, cols) and (spacing is None or spacing[0] == spacing[1])
    ):
        return np.ascontiguousarray(values, dtype=np.float32), (spacing, 1.0, (0, 0))
    target_r, target_c = size
    # Physical extent in units of the finer spacing, so the aspect ratio is kept in mm.
    sr, sc = spacing if spacing else (1.0, 1.0)
    finest = min(sr, sc)
    h, w = rows * sr / finest, cols * sc / finest
    scale = min(target_r / h, target_c / w)
    new_r, new_c = max(1, min(target_r, round(h * scale))), max(1, min(target_c, round(w * scale)))
    channels = [
        np.asarray(Image.fromarray(values[..., k], mode="F").resize((new_c, new_r), method))
        for k in range(values.shape[-1])
    ]
    resized = np.stack(channels, axis=-1)
    top, left = (target_r - new_r) // 2, (target_c - new_c) // 2
    background = float(values.min()) if fill is None else fill
    out = np.full((target_r, target_c, values.shape[-1]), background, dtype=np.float32)
    out[top : top + new_r, left : left + new_c] = resized
    new_spacing = (sr * rows / new_r, sc * cols / new_c) if spacing else None
    return out, (new_spacing, new_r / rows, (top, left))
