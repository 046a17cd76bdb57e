"""Classification results: class probabilities per frame of each DICOM file."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from medflow.serving.client import FramePrediction, ModelInfo, Prediction, origin

TASK_NAME = "classification"


@dataclass(frozen=True)
class ImagePrediction(FramePrediction):
    """A classification result for one frame of one DICOM file (original UIDs)."""

    probabilities: list[float]
    class_id: int
    score: float
    # the operating point the exported graph applied to decide class_id (None: argmax)
    threshold: float | None = None

    task = TASK_NAME

    @property
    def label(self) -> str:
        return (
            self.labels[self.class_id]
            if 0 <= self.class_id < len(self.labels)
            else str(self.class_id)
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def decode(chunk, pred: Prediction, info: ModelInfo) -> list[ImagePrediction]:
    """One :class:`ImagePrediction` per model input of ``chunk``."""
    labels = info.labels
    probs = pred.outputs["probabilities"]
    class_ids = pred.outputs.get("class_id", probs.argmax(axis=1))
    scores = pred.outputs.get("score", probs.max(axis=1))
    cuts = pred.outputs.get("threshold")
    return [
        ImagePrediction(
            **origin(item, pred),
            labels=labels,
            probabilities=[float(p) for p in probs[i]],
            class_id=int(class_ids[i]),
            score=float(scores[i]),
            threshold=float(cuts[i]) if cuts is not None else None,
        )
        for i, item in enumerate(chunk)
    ]
