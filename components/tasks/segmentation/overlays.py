"""PNG overlays and mask files of segmentation predictions (quick look, non-DICOM viewers).

An overlay is the source frame as the review page first shows it (:mod:`dashboard.viewer`:
Modality LUT, the header's window when it has one, else the full range; MONOCHROME1
inverted) with each predicted class filled in its colour (40 %) and its contour drawn in
full colour -- the dashboard's colours and contour, so a PNG and the review page agree.

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

from medflow.core.files import atomic_write

ALPHA = 0.4


def display_frame(path: str | Path, frame_index: int = 0) -> np.ndarray:
    """uint8 ``[rows, cols]`` grey (or ``[rows, cols, 3]`` colour) of one frame of a DICOM
    file, windowed as the review page's default preset."""
    from medflow.components.dicom.display import load_study, render

    study = load_study(path)
    center, width = study.preset_window(study.presets()[0])
    return render(study, frame_index, center, width)


def overlay_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[rows, cols, 3]``: ``image`` with each class of ``mask`` filled and outlined."""
    from medflow.components.dicom.display import blend_mask

    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ")
    filled = blend_mask(image, mask, ALPHA, "fill")
    return blend_mask(filled, mask, 1.0, "contour")


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
