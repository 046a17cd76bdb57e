"""Boxes between the source image and the model-input grid, and CenterNet training targets.

The preprocessing (``components.dicom.pixels.to_model_input``) resizes an image by ``scale``
(model pixels per source pixel along rows; along columns times the column/row spacing ratio)
and pads it by ``(top, left)``; a box corner maps the same way, and back. Boxes are arrays
``[n, 4]`` of ``(x0, y0, x1, y1)`` pixel-edge corners with a class index array ``[n]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medflow.components.ingest.voc_import import Box, parse_boxes


def _scales(scale: float, spacing: Sequence[float] | None) -> tuple[float, float]:
    """(column, row) model pixels per source pixel."""
    if spacing and len(spacing) == 2 and spacing[0] > 0 and spacing[1] > 0:
        sr, sc = float(spacing[0]), float(spacing[1])
        return scale * sc / sr, scale
    return scale, scale


def to_model_grid(xyxy: np.ndarray, scale: float, pad: Sequence[int], spacing=None) -> np.ndarray:
    """Source-pixel corners ``[n, 4]`` -> model-input corners (resize, then pad)."""
    sx, sy = _scales(scale, spacing)
    top, left = float(pad[0]), float(pad[1])
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    return xyxy * np.array([sx, sy, sx, sy], np.float32) + np.array([left, top, left, top])


def to_source_grid(
    xyxy: np.ndarray, scale: float, pad: Sequence[int], rows: int, cols: int, spacing=None
) -> np.ndarray:
    """Model-input corners ``[n, 4]`` -> source-pixel corners, clipped to the ``rows`` x
    ``cols`` image (the inverse of :func:`to_model_grid`)."""
    sx, sy = _scales(scale, spacing)
    top, left = float(pad[0]), float(pad[1])
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    out = (xyxy - np.array([left, top, left, top])) / np.array([sx, sy, sx, sy], np.float32)
    return np.clip(out, 0, np.array([cols, rows, cols, rows], np.float32)).astype(np.float32)


def boxes_array(boxes: list[Box], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(corners float32 [n, 4], class indices int32 [n]) of ``boxes`` (labels in ``classes``)."""
    index = {c: i for i, c in enumerate(classes)}
    xyxy = np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], np.float32).reshape(-1, 4)
    return xyxy, np.array([index[b.label] for b in boxes], np.int32)


def cell_to_model_grid(
    cell: str, where: str, classes: Sequence[str], scale: float, pad: Sequence[int], spacing=None
) -> tuple[np.ndarray, np.ndarray]:
    """A manifest ``boxes`` cell (source pixels) -> (model-grid corners, class indices).

    Raises:
        InputError: a malformed cell or a label outside ``classes`` (naming ``where``).
    """
    xyxy, cls = boxes_array(parse_boxes(cell, where, tuple(classes)), classes)
    return to_model_grid(xyxy, scale, pad, spacing), cls


def gaussian_radius(w: float, h: float, min_overlap: float = 0.7) -> float:
    """CenterNet's heatmap radius: the corner shift keeping IoU >= ``min_overlap``."""
    a1, b1 = 1.0, h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4.0, 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + np.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + np.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return max(0.0, float(min(r1, r2, r3)))


def centernet_targets(
    xyxy: np.ndarray, cls: np.ndarray, grid: tuple[int, int], stride: int, n_classes: int
) -> np.ndarray:
    """Training target ``[grid_rows, grid_cols, n_classes + 5]`` of model-grid boxes:
    per-class Gaussian heatmaps, then at each box centre its width and height (model
    pixels / stride), sub-cell offset (x, y) and a 1 marking the centre."""
    gr, gc = grid
    out = np.zeros((gr, gc, n_classes + 5), np.float32)
    ys, xs = np.mgrid[0:gr, 0:gc]
    for (x0, y0, x1, y1), k in zip(xyxy / stride, cls, strict=True):
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(cx), gc - 1), min(int(cy), gr - 1)
        sigma = (2 * max(0.0, gaussian_radius(w, h)) + 1) / 6
        peak = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
        out[..., k] = np.maximum(out[..., k], peak)
        out[iy, ix, n_classes : n_classes + 5] = (w, h, cx - ix, cy - iy, 1.0)
    return out
