"""Segmentation masks beside the images: read a mask file and put it on the model-input grid.

A mask is a 2-D image with the instance's Rows x Columns: a PNG (any mode; colour is
converted to grey) or a NumPy ``.npy`` array. A mask holding only 0 and 255 (the usual
binary PNG) is stored as 0/1; other values are kept as class indices (0 = background).
A contour text file (``.txt``, polygon vertices in pixels, :mod:`components.dicom.contours`)
is filled on the instance's Rows x Columns grid instead. A DICOM SEG (``seg.dcm``, or
``seg.dcm#N`` for segment N) gives the frame(s) referencing the instance
(:mod:`components.dicom.dicom_seg_masks`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medflow.components.dicom.contours import contour_mask, is_contour_file
from medflow.components.dicom.dicom_seg_masks import is_dicom_mask, seg_mask
from medflow.components.dicom.errors import DicomRejected
from medflow.components.dicom.pixels import frame_indices, pixel_spacing, resample_mask
from medflow.core.pixel_spec import PixelSpec


def read_mask(path: str | Path, name: str = "") -> np.ndarray:
    """The mask file as uint8 ``[rows, cols]`` class indices.

    Raises:
        DicomRejected: ``mask_unreadable`` when the file is missing or not a 2-D image.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            mask = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as image:
                mask = np.asarray(image.convert("L") if image.mode not in ("L", "P") else image)
    except (OSError, ValueError) as exc:
        raise DicomRejected(
            "mask_unreadable", f"{name}: cannot read its mask {path} ({exc}); fix the mask column"
        ) from exc
    if mask.ndim != 2 or mask.size == 0:
        raise DicomRejected(
            "mask_unreadable", f"{name}: mask {path} has shape {mask.shape}; expected rows x cols"
        )
    if mask.min() < 0 or mask.max() > 255:
        raise DicomRejected(
            "mask_unreadable", f"{name}: mask {path} holds values outside 0..255 (class indices)"
        )
    mask = mask.astype(np.uint8)
    if set(np.unique(mask).tolist()) <= {0, 255}:
        mask = (mask > 0).astype(np.uint8)
    return mask


def mask_for_instance(ds, path: str | Path, spec: PixelSpec, name: str = "") -> np.ndarray:
    """The mask of one single-frame instance resampled exactly like its pixels.

    Raises:
        DicomRejected: ``mask_mismatch`` when the mask's size differs from the image's or
            the instance contributes several frames; ``mask_unreadable`` (see :func:`read_mask`).
    """
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = frame_indices(n_frames, spec.frames)
    if len(frames) != 1:
        raise DicomRejected(
            "mask_mismatch",
            f"{name}: one mask file for {n_frames} frames; masks are per frame (ingest with "
            "frames=middle or first)",
        )
    return resample_mask(source_mask(ds, path, frames[0], name), spec.size, pixel_spacing(ds))


def source_mask(ds, path: str | Path, frame: int = 0, name: str = "") -> np.ndarray:
    """The mask of ``frame`` of an instance on its own Rows x Columns grid (a mask file, a
    contour filled on that grid, or a DICOM SEG's frame referencing it).

    Raises:
        DicomRejected: ``mask_mismatch`` when the mask's size differs from the image's;
            ``mask_unreadable`` (see :func:`read_mask`).
    """
    rows, cols = int(ds.Rows), int(ds.Columns)
    if is_contour_file(path):  # polygon vertices (Sunnybrook contours): filled on this grid
        mask = contour_mask(path, rows, cols, name)
    elif is_dicom_mask(path):  # a DICOM SEG referencing this instance (seg.dcm or seg.dcm#N)
        mask = seg_mask(ds, path, frame, name)
    else:
        mask = read_mask(path, name)
    if mask.shape != (rows, cols):
        raise DicomRejected(
            "mask_mismatch",
            f"{name}: mask {path} is {mask.shape[0]}x{mask.shape[1]} but the image is "
            f"{rows}x{cols}; a mask must have the image's rows and columns",
        )
    return mask
