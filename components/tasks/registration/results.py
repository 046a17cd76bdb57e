"""Typed results of a registration ``Predict`` answer: one :class:`PairResult` per pair."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class PairResult:
    """One registered pair: what ``medflow predict`` prints and writes.

    ``warped`` [rows, cols] is the moving image warped onto the fixed image (model grid)
    and ``displacement`` [rows, cols, 2] the field (row, col offsets in model-grid pixels);
    Dice and HD95 (mm, from the fixed image's pixel spacing) are None without masks.
    """

    fixed: str
    moving: str
    folding_fraction: float
    ncc: float | None
    model_name: str
    model_version: str
    warped: np.ndarray | None = None
    displacement: np.ndarray | None = None
    dice_before: float | None = None
    dice_after: float | None = None
    hd95_before_mm: float | None = None  # 95th percentile Hausdorff distance of the masks
    hd95_after_mm: float | None = None
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    task: str = "registration"
    source: Any = None  # the PairInput (images on the model grid, source geometry)
    warped_mask: np.ndarray | None = None
    fixed_mask: np.ndarray | None = None

    review_ref: str | None = None  # the warped image as a PNG on the fixed grid (--record)

    # The fixed image is the case a review is about (the review store's image and UIDs).
    @property
    def path(self) -> str:
        return self.source.fixed.path

    @property
    def frame_index(self) -> int:
        return self.source.fixed.frame_index

    @property
    def sop_instance_uid(self) -> str:
        return self.source.fixed.sop_instance_uid

    @property
    def study_instance_uid(self) -> str:
        return self.source.fixed.study_instance_uid

    @property
    def series_instance_uid(self) -> str:
        return self.source.fixed.series_instance_uid

    def to_dict(self) -> dict[str, Any]:
        skip = ("warped", "displacement", "source", "warped_mask", "fixed_mask", "review_ref")
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip
        }


def _masks(pair) -> tuple[np.ndarray, np.ndarray] | None:
    """The pair's (fixed, moving) masks on the model grid, resampled as their images were."""
    if not (pair.fixed_mask and pair.moving_mask):
        return None
    from medflow.components.dicom.masks import mask_for_instance
    from medflow.components.dicom.reader import read_dicom

    out = []
    for image, mask in ((pair.fixed, pair.fixed_mask), (pair.moving, pair.moving_mask)):
        ds = read_dicom(image.path)
        out.append(mask_for_instance(ds, mask, pair.spec, image.path) > 0)
    return out[0], out[1]


def decode(inputs, prediction, info) -> list[PairResult]:
    """``prediction`` (a ``Prediction``: output name -> array, batch first) for ``inputs``
    (pairs: ``fixed``/``moving`` model inputs, optional mask files) -> one
    :class:`PairResult` each, with Dice and HD95 before/after when the pair has masks."""
    import tensorflow as tf

    from medflow.components.tasks.registration.layers import warp
    from medflow.components.tasks.registration.losses import mask_scores

    outputs = prediction.outputs
    results = []
    for i, pair in enumerate(inputs):
        result = PairResult(
            fixed=pair.fixed.path,
            moving=pair.moving.path,
            folding_fraction=float(np.asarray(outputs["folding_fraction"])[i]),
            ncc=float(np.asarray(outputs["ncc"])[i]),
            model_name=prediction.model_name,
            model_version=str(prediction.model_version),
            warped=np.asarray(outputs["warped"])[i],
            displacement=np.asarray(outputs["displacement"])[i],
            source=pair,
        )
        masks = _masks(pair)
        if masks is not None:
            moving = tf.constant(masks[1][None, ..., None].astype(np.float32))
            warped = warp(moving, result.displacement[None]).numpy()[0, ..., 0]
            spacing = pair.fixed.geometry.pixel_spacing or (1.0, 1.0)  # mm of a model pixel
            for name, value in mask_scores(masks[0], masks[1], warped, spacing).items():
                setattr(result, name, value)
            result.warped_mask = warped >= 0.5
            result.fixed_mask = masks[0]
        results.append(result)
    return results
