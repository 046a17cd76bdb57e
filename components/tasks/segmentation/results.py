"""Segmentation results: a mask per frame on the source image grid, with areas and scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medflow.serving.client import FramePrediction, ModelInfo, Prediction, origin
from medflow.serving.source_grid import to_source_grid

TASK_NAME = "segmentation"
# Foreground threshold of a binary model that does not serve its own (``threshold`` output,
# the cut-off its Trainer chose on eval: components.tasks.segmentation.trust).
MASK_THRESHOLD = 0.5


@dataclass(frozen=True, eq=False)
class MaskPrediction(FramePrediction):
    """A segmentation result for one frame of one DICOM file, on the source image grid.

    Attributes:
        labels: class names; index = the class index in ``mask`` (0 = background).
        mask: uint8 [rows, cols] of the source image: 0/1 for a binary model (probability
            >= the model's served ``threshold``, else 0.5), class indices (argmax) for a
            multi-class one.
        probabilities: float32 on the same grid: [rows, cols] foreground probability of a
            binary model, [rows, cols, n_classes] of a multi-class one (bilinear resampling
            of the model's output, with the preprocessing's padding cut off).
        pixel_spacing: (row, col) mm of the source pixels, None when the file has none.
        foreground_pixels: pixels with a non-zero class.
        area_mm2: their area (foreground_pixels x row spacing x col spacing), None
            without a pixel spacing.
        mean_probability: mean probability of the predicted class over the foreground
            pixels (0.0 when nothing was found).
        mask_ref: where the mask was saved (set by ``medflow predict --record``).
    """

    mask: np.ndarray
    probabilities: np.ndarray
    pixel_spacing: tuple[float, float] | None
    foreground_pixels: int
    area_mm2: float | None
    mean_probability: float
    mask_ref: str | None = None
    threshold: float = MASK_THRESHOLD

    task = TASK_NAME

    @property
    def scores(self) -> list[float]:
        """One presence score per label (for the review queue): for class k >= 1 the mean
        probability of k over the pixels predicted as k, or its highest probability when no
        pixel is; for the background 1 - the highest of those. A binary model's scores are
        ``[1 - s, s]`` with ``s >=`` the mask threshold exactly when the mask is not empty."""
        probs = self.probabilities
        if probs.ndim == 2:
            probs = np.stack([1.0 - probs, probs], axis=-1)
        present = []
        for k in range(1, probs.shape[-1]):
            region = self.mask == k
            p = probs[..., k]
            present.append(float(p[region].mean()) if region.any() else float(p.max()))
        return [1.0 - max(present, default=0.0), *present]

    @property
    def class_id(self) -> int:
        scores = self.scores
        return max(range(len(scores)), key=scores.__getitem__)

    @property
    def label(self) -> str:
        return (
            self.labels[self.class_id] if self.class_id < len(self.labels) else str(self.class_id)
        )

    def class_areas(self) -> dict[str, dict]:
        """{label: {"pixels", "area_mm2"}} of every non-background class."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.labels))
        px_mm2 = self.pixel_spacing[0] * self.pixel_spacing[1] if self.pixel_spacing else None
        return {
            self.labels[k]: {
                "pixels": int(counts[k]),
                "area_mm2": None if px_mm2 is None else float(counts[k] * px_mm2),
            }
            for k in range(1, len(self.labels))
        }

    def to_dict(self) -> dict:
        """The JSON summary (no arrays): UIDs, model, areas, scores, ``mask_ref``."""
        return {
            "task": self.task,
            "path": self.path,
            "frame_index": self.frame_index,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "labels": self.labels,
            "rows": int(self.mask.shape[0]),
            "columns": int(self.mask.shape[1]),
            "pixel_spacing": list(self.pixel_spacing) if self.pixel_spacing else None,
            "foreground_pixels": self.foreground_pixels,
            "area_mm2": self.area_mm2,
            "mean_probability": self.mean_probability,
            "classes": self.class_areas(),
            "label": self.label,
            "scores": self.scores,
            "mask_ref": self.mask_ref,
            "mask_threshold": self.threshold,
        }


def decode(chunk, pred: Prediction, info: ModelInfo) -> list[MaskPrediction]:
    """One :class:`MaskPrediction` per model input of ``chunk``, on its source image grid."""
    probs = pred.outputs["probabilities"]
    cuts = pred.outputs.get("threshold")
    out = []
    for i, item in enumerate(chunk):
        geometry = item.geometry
        spacing = item.source_spacing
        grid = to_source_grid(
            probs[i], geometry.orig_rows, geometry.orig_cols, spacing, info.spec.size
        )
        cut = float(cuts[i]) if cuts is not None else MASK_THRESHOLD
        if grid.ndim == 2:
            mask = (grid >= np.float32(cut)).astype(np.uint8)
            chosen = grid
        else:
            mask = grid.argmax(axis=-1).astype(np.uint8)
            chosen = np.take_along_axis(grid, mask[..., None].astype(np.intp), axis=-1)[..., 0]
        foreground = mask > 0
        n = int(foreground.sum())
        out.append(
            MaskPrediction(
                **origin(item, pred),
                labels=info.labels,
                mask=mask,
                probabilities=grid,
                pixel_spacing=spacing,
                foreground_pixels=n,
                area_mm2=None if spacing is None else float(n * spacing[0] * spacing[1]),
                mean_probability=float(chosen[foreground].mean()) if n else 0.0,
                threshold=cut if grid.ndim == 2 else MASK_THRESHOLD,
            )
        )
    return out
