"""Segmentation metrics on NumPy masks: Dice, IoU, 95th-percentile Hausdorff distance in
mm and head circumference from an ellipse fit. The Evaluator computes the first three
through :mod:`components.models.tfma_segmentation`.
"""

from __future__ import annotations

import math

import numpy as np

DICE, IOU, HD95 = "dice", "iou", "hausdorff95_mm"


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    pred, true = pred.astype(bool), true.astype(bool)
    total = pred.sum() + true.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, true).sum() / total)


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two binary masks; 1.0 when both are empty."""
    pred, true = pred.astype(bool), true.astype(bool)
    union = np.logical_or(pred, true).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, true).sum() / union)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95_mm(pred: np.ndarray, true: np.ndarray, spacing=(1.0, 1.0)) -> float:
    """95th percentile of the boundary-to-boundary distances, both ways, in mm.

    0 when both masks are empty; the image diagonal (the worst possible value) when only
    one is, so that a missed structure weighs in an average instead of vanishing.
    """
    from scipy import ndimage

    pred, true = pred.astype(bool), true.astype(bool)
    if not pred.any() and not true.any():
        return 0.0
    if not pred.any() or not true.any():
        return float(math.hypot(pred.shape[0] * spacing[0], pred.shape[1] * spacing[1]))
    sp, st = _surface(pred), _surface(true)
    to_true = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return float(max(np.percentile(to_true, 95), np.percentile(to_pred, 95)))


def ellipse_circumference_mm(mask: np.ndarray, spacing=(1.0, 1.0)) -> float:
    """Circumference of the ellipse with the second moments of the mask's largest region.

    A uniform filled ellipse with semi-axes a, b has variances a²/4 and b²/4 along its
    axes; the circumference is Ramanujan's approximation. 0 for an empty mask.
    """
    from scipy import ndimage

    labels, n = ndimage.label(mask.astype(bool))
    if n == 0:
        return 0.0
    largest = 1 + int(np.argmax(ndimage.sum(np.ones_like(labels), labels, range(1, n + 1))))
    rows, cols = np.nonzero(labels == largest)
    points = np.stack([rows * spacing[0], cols * spacing[1]])
    if points.shape[1] < 3:
        return 0.0
    eigen = np.clip(np.linalg.eigvalsh(np.cov(points)), 0.0, None)
    b, a = 2.0 * np.sqrt(eigen)
    return float(math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b))))


def spacing_of(value) -> tuple[float, float]:
    """(row_mm, col_mm) from a pixel-spacing feature value; (1, 1) when unknown."""
    values = np.asarray(value, dtype=np.float64).reshape(-1) if value is not None else []
    return (float(values[0]), float(values[1])) if len(values) == 2 else (1.0, 1.0)


def mask_from_label(label, shape) -> np.ndarray:
    """Boolean mask from a label value: raw uint8 bytes (the ingested feature) or numbers."""
    value = np.asarray(label).reshape(-1)
    if value.dtype.kind in ("S", "O"):
        return np.frombuffer(value[0], dtype=np.uint8).reshape(shape) > 0
    return np.asarray(label).reshape(shape) > 0
