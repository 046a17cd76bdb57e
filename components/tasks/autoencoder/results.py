"""Autoencoder results: the reconstruction score per frame of each DICOM file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medflow.serving.client import FramePrediction, ModelInfo, Prediction, origin

TASK_NAME = "autoencoder"


@dataclass(frozen=True, eq=False)
class ReconstructionPrediction(FramePrediction):
    """An autoencoder's answer for one frame.

    Attributes:
        score: mean squared reconstruction error per pixel in normalised units (higher =
            less like the training images).
        elbo: the VAE's evidence lower bound (nats, up to a constant); None for an AE.
        reconstruction: float32 [rows, cols, channels] on the model-input grid, normalised
            units (not in the JSON document).
    """

    score: float
    elbo: float | None
    reconstruction: np.ndarray

    task = TASK_NAME

    def to_dict(self) -> dict:
        keys = ("path", "frame_index", "sop_instance_uid", "study_instance_uid")
        keys += ("series_instance_uid", "model_name", "model_version", "score", "elbo")
        return {k: getattr(self, k) for k in keys}


def decode(chunk, pred: Prediction, info: ModelInfo) -> list[ReconstructionPrediction]:
    """One :class:`ReconstructionPrediction` per model input of ``chunk``."""
    del info
    scores = pred.outputs["score"]
    elbo = pred.outputs.get("elbo")
    recon = pred.outputs["reconstruction"]
    return [
        ReconstructionPrediction(
            **origin(item, pred),
            labels=[],
            score=float(scores[i]),
            elbo=None if elbo is None else float(elbo[i]),
            reconstruction=np.asarray(recon[i], dtype=np.float32),
        )
        for i, item in enumerate(chunk)
    ]
