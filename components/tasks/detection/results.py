"""Detection results: boxes per frame on the source image grid, with labels and scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medflow.components.tasks.detection.boxes import to_source_grid
from medflow.serving.client import FramePrediction, ModelInfo, Prediction, origin

TASK_NAME = "detection"


@dataclass(frozen=True, eq=False)
class BoxPrediction(FramePrediction):
    """Detections in one frame of one DICOM file.

    Attributes:
        boxes: ``[{label, score, x0, y0, x1, y1}]`` in source pixels (pixel-edge corners,
            clipped to the image), highest score first.
        rows / columns: the source image's size.
        boxes_ref: where the boxes file for review was saved (``medflow predict --record``).
    """

    boxes: list[dict]
    rows: int
    columns: int
    boxes_ref: str | None = None

    task = TASK_NAME

    @property
    def scores(self) -> list[float]:
        """Per label: the highest score of a box of that label (0 when none; review queue)."""
        best = dict.fromkeys(self.labels, 0.0)
        for b in self.boxes:
            best[b["label"]] = max(best.get(b["label"], 0.0), b["score"])
        return [best[label] for label in self.labels]

    @property
    def label(self) -> str:
        return self.boxes[0]["label"] if self.boxes else "none"

    def to_dict(self) -> dict:
        """The JSON record: which frame of which file, which model, and its ``boxes``."""
        return {"task": self.task, **asdict(self)}


def source_boxes(
    xyxy, scores, classes, count: int, labels: list[str], geometry, spacing
) -> list[dict]:
    """The first ``count`` model-grid detections as source-pixel box records."""
    n = int(count)
    src = to_source_grid(
        np.asarray(xyxy)[:n],
        geometry.scale,
        geometry.pad,
        geometry.orig_rows,
        geometry.orig_cols,
        spacing,
    )
    out = []
    for (x0, y0, x1, y1), s, k in zip(
        src, np.asarray(scores)[:n], np.asarray(classes)[:n], strict=True
    ):
        label = labels[int(k)] if 0 <= int(k) < len(labels) else str(int(k))
        out.append(
            {
                "label": label,
                "score": round(float(s), 6),
                "x0": round(float(x0), 2),
                "y0": round(float(y0), 2),
                "x1": round(float(x1), 2),
                "y1": round(float(y1), 2),
            }
        )
    return sorted(out, key=lambda b: -b["score"])


def decode(chunk, pred: Prediction, info: ModelInfo) -> list[BoxPrediction]:
    """One :class:`BoxPrediction` per model input of ``chunk``, boxes on its source grid."""
    o = pred.outputs
    out = []
    for i, item in enumerate(chunk):
        g = item.geometry
        boxes = source_boxes(
            o["boxes"][i],
            o["scores"][i],
            o["classes"][i],
            o["num_detections"][i],
            info.labels,
            g,
            item.source_spacing,
        )
        out.append(
            BoxPrediction(
                **origin(item, pred),
                labels=info.labels,
                boxes=boxes,
                rows=g.orig_rows,
                columns=g.orig_cols,
            )
        )
    return out
