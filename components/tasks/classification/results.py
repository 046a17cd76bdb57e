"""Classification results: class probabilities per frame of each DICOM file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from medflow.serving.client import FramePrediction, ModelInfo, Prediction, origin
from medflow.serving.source_grid import to_source_grid

TASK_NAME = "classification"


@dataclass(frozen=True)
class ImagePrediction(FramePrediction):
    """A classification result for one frame of one DICOM file (original UIDs)."""

    probabilities: list[float]
    class_id: int
    score: float
    # the operating point the exported graph applied to decide class_id (None: argmax)
    threshold: float | None = None
    # Grad-CAM of the decided class on the source image's grid, [0, 1] (the ``explain``
    # signature's ``heatmap``); None when the model was asked through serving_default
    heatmap: np.ndarray | None = field(default=None, compare=False, repr=False)
    heatmap_ref: str | None = None  # where --record saved it for the review page

    task = TASK_NAME

    @property
    def label(self) -> str:
        return (
            self.labels[self.class_id]
            if 0 <= self.class_id < len(self.labels)
            else str(self.class_id)
        )

    def to_dict(self) -> dict:
        out = {**asdict(self), "label": self.label}
        del out["heatmap"]  # an array; written as files by --overlay-out / --record
        return out


def decode(chunk, pred: Prediction, info: ModelInfo) -> list[ImagePrediction]:
    """One :class:`ImagePrediction` per model input of ``chunk``."""
    labels = info.labels
    probs = pred.outputs["probabilities"]
    class_ids = pred.outputs.get("class_id", probs.argmax(axis=1))
    scores = pred.outputs.get("score", probs.max(axis=1))
    cuts = pred.outputs.get("threshold")
    heatmaps = pred.outputs.get("heatmap")
    return [
        ImagePrediction(
            **origin(item, pred),
            labels=labels,
            probabilities=[float(p) for p in probs[i]],
            class_id=int(class_ids[i]),
            score=float(scores[i]),
            threshold=float(cuts[i]) if cuts is not None else None,
            heatmap=None if heatmaps is None else _on_source(heatmaps[i], item, info),
        )
        for i, item in enumerate(chunk)
    ]


def _on_source(heatmap: np.ndarray, item, info: ModelInfo) -> np.ndarray:
    """A model-input-grid heat map on the source image's rows x columns."""
    geometry = item.geometry
    grid = to_source_grid(
        heatmap, geometry.orig_rows, geometry.orig_cols, item.source_spacing, info.spec.size
    )
    return np.clip(grid, 0.0, 1.0)
