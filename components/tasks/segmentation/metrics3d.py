"""Volume segmentation metrics per label: Dice, HD95 in mm and the volume error in mL
(predicted minus true), on the voxel grid whose affine the example carries."""

from __future__ import annotations

import re

import numpy as np

from medflow.components.tasks.segmentation.metrics import DICE, HD95, IOU, dice, hausdorff95_mm, iou

# Per-label values a metric may ask for: dice_1, hausdorff95_mm_2, volume_error_ml_1, ...
PER_LABEL = re.compile(rf"({DICE}|{HD95}|volume_error_ml)_(\d+)")


def spacing_from_affine(value) -> tuple[float, float, float]:
    """Voxel spacing (mm per array axis) from a ``volume_affine`` feature (16 floats)."""
    affine = np.asarray(value, dtype=np.float64).reshape(4, 4)
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))


def volume_values(probabilities: np.ndarray, true: np.ndarray, spacing) -> dict[str, float]:
    """Per-label and mean (over foreground labels) values of one volume: ``probabilities``
    [d, h, w, n_classes], ``true`` class indices [d, h, w]."""
    n = probabilities.shape[-1]
    pred = np.argmax(probabilities, axis=-1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: dict[str, float] = {}
    for c in range(1, n):
        p, t = pred == c, true == c
        out[f"{DICE}_{c}"] = dice(p, t)
        out[f"{HD95}_{c}"] = hausdorff95_mm(p, t, spacing)
        out[f"volume_error_ml_{c}"] = (int(p.sum()) - int(t.sum())) * voxel_ml
        out[f"{IOU}_{c}"] = iou(p, t)
    for name in (DICE, HD95, IOU):
        out[name] = float(np.mean([out[f"{name}_{c}"] for c in range(1, n)]))
    return out
