"""PNG overlays and mask files of segmentation predictions (quick look, non-DICOM viewers).

An overlay is the source frame as displayed (Modality LUT, the header's VOI window when it
has one, else the 0.5-99.5 percentile range; MONOCHROME1 inverted; colour as luma) in grey,
each predicted class blended in its colour (40 %) with its outline drawn in full colour.

A mask file (``medflow predict --record``, the review store's ``mask_ref``) is a 2-D uint8
PNG (mode L) with the source image's rows x columns: 0 = background, 1 = foreground of a
binary model, k = class k of a multi-class model (the prediction's ``labels[k]``).
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from serving.dicom_seg import atomic_write

# Class k >= 1 gets COLOURS[(k - 1) % len(COLOURS)].
COLOURS = (
    (255, 48, 48),
    (48, 220, 48),
    (64, 128, 255),
    (255, 210, 0),
    (255, 64, 255),
    (0, 230, 230),
)
ALPHA = 0.4


def display_frame(path: str | Path, frame_index: int = 0) -> np.ndarray:
    """uint8 ``[rows, cols]`` grey of one frame of a DICOM file, as it would be displayed."""
    from components.dicom.pixels import PixelSpec, to_model_input
    from components.dicom.reader import read_dicom

    ds = read_dicom(path)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    spec = PixelSpec(
        size=None, channels=1, window="header", frames="all" if n_frames > 1 else "first"
    )
    frames = {g.frame_index: a for a, g in to_model_input(ds, spec, str(path))}
    values = frames[frame_index][..., 0]
    windowed = "WindowCenter" in ds and "WindowWidth" in ds and values.max() <= 1.0
    lo, hi = (0.0, 1.0) if windowed else np.percentile(values, (0.5, 99.5))
    scaled = (values - lo) / max(float(hi - lo), 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a non-zero class with a 4-neighbour of another class (or the border)."""
    padded = np.pad(mask, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return (mask > 0) & differs


def overlay_image(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[rows, cols, 3]``: ``grey`` with each class of ``mask`` blended and outlined."""
    if grey.shape != mask.shape:
        raise ValueError(f"image {grey.shape} and mask {mask.shape} differ")
    rgb = np.repeat(grey[..., None].astype(np.float32), 3, axis=-1)
    edges = outline(mask)
    for k in np.unique(mask):
        if k == 0:
            continue
        colour = np.array(COLOURS[(int(k) - 1) % len(COLOURS)], np.float32)
        region = mask == k
        rgb[region] = (1 - ALPHA) * rgb[region] + ALPHA * colour
        rgb[region & edges] = colour
    return (rgb + 0.5).astype(np.uint8)


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _stem(pred) -> str:
    """``<SOPInstanceUID>_f<frame>`` (file-name safe)."""
    uid = re.sub(r"[^0-9A-Za-z.]", "_", pred.sop_instance_uid or Path(pred.path).stem)
    return f"{uid}_f{pred.frame_index}"


def write_overlays(predictions: Sequence, out_dir: str | Path) -> list[str]:
    """One ``<SOPInstanceUID>_f<frame>.png`` overlay per prediction (atomic writes);
    returns their paths in the order of ``predictions``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for pred in predictions:
        target = out_dir / f"{_stem(pred)}.png"
        grey = display_frame(pred.path, pred.frame_index)
        atomic_write(target, _png(overlay_image(grey, pred.mask), "RGB"))
        paths.append(str(target))
    return paths


def save_masks(predictions: Sequence, out_dir: str | Path) -> list:
    """Each mask as ``<SOPInstanceUID>_f<frame>_<model>-<version>.mask.png`` (format in the
    module docstring); returns the predictions with ``mask_ref`` set to the absolute path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for pred in predictions:
        model = re.sub(r"[^0-9A-Za-z.-]", "_", f"{pred.model_name}-{pred.model_version}")
        target = (out_dir / f"{_stem(pred)}_{model}.mask.png").resolve()
        atomic_write(target, _png(np.ascontiguousarray(pred.mask, dtype=np.uint8), "L"))
        saved.append(dataclasses.replace(pred, mask_ref=str(target)))
    return saved


def read_mask_file(path: str | Path) -> np.ndarray:
    """A mask file written by :func:`save_masks` as uint8 ``[rows, cols]`` class indices."""
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.uint8)
