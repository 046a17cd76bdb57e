"""TFMA metric computing segmentation quality inside the Evaluator.

Reads the prediction ``probabilities`` [rows, cols] of the ``serve_examples`` signature,
the label ``mask`` (raw uint8 bytes of the ingested example) and the example's
``pixel_spacing`` (mm of a stored pixel), and averages per-image ``dice``, ``iou`` and
``hausdorff95_mm`` over each slice. Configure it with ``MetricConfig(class_name=
"SegmentationMetrics", module=__name__)``.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from medflow.components.models.evaluation import combiner_computations
from medflow.components.tasks.segmentation.metrics import (
    DICE,
    HD95,
    IOU,
    dice,
    hausdorff95_mm,
    iou,
    mask_from_label,
    spacing_of,
)
from medflow.components.tasks.segmentation.metrics3d import (
    PER_LABEL,
    spacing_from_affine,
    volume_values,
)
from medflow.core import features

PREDICTION_KEY = "probabilities"


class _SegmentationCombiner(beam.CombineFn):
    """Mean of per-image (per-volume) values over a slice: Dice, IoU and HD95 (mm), and for
    volume examples (:mod:`.metrics3d`) the same per label and the volume error in mL."""

    def __init__(self, keys, threshold: float, spacing_feature: str):
        self._keys = keys
        self._threshold = threshold
        self._spacing_feature = spacing_feature

    def create_accumulator(self):
        return {"n": 0}

    def _values(self, element) -> dict[str, float]:
        prediction, threshold = element.prediction, self._threshold
        if isinstance(prediction, dict):  # all signature outputs; prediction_key not applied
            if "threshold" in prediction:  # the mask threshold the exported graph applies
                threshold = float(np.asarray(prediction["threshold"]).reshape(-1)[0])
            prediction = prediction[PREDICTION_KEY]
        probabilities = np.asarray(prediction, dtype=np.float32)
        feats = element.features or {}
        if feats.get(features.VOLUME_AFFINE) is not None:
            probabilities = probabilities.reshape(probabilities.shape[-4:])
            size = int(np.prod(probabilities.shape[:3]))
            raw = np.asarray(element.label).reshape(-1).tolist()[0]  # numpy strips end zeros
            true = np.frombuffer(bytes(raw).ljust(size, b"\0"), np.uint8)
            true = true.reshape(probabilities.shape[:3])
            spacing = spacing_from_affine(feats[features.VOLUME_AFFINE])
            return volume_values(probabilities, true, spacing)
        probabilities = probabilities.reshape(probabilities.shape[-2:])
        true = mask_from_label(element.label, probabilities.shape)
        pred = probabilities >= threshold
        spacing = spacing_of(feats.get(self._spacing_feature))
        return {
            DICE: dice(pred, true),
            IOU: iou(pred, true),
            HD95: hausdorff95_mm(pred, true, spacing),
        }

    def add_input(self, acc, element):
        for name, value in self._values(element).items():
            acc[name] = acc.get(name, 0.0) + value
        acc["n"] += 1
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            for name, value in acc.items():
                out[name] = out.get(name, 0) + value
        return out

    def extract_output(self, acc):
        n = max(acc["n"], 1)
        return {key: acc.get(key.name, 0.0) / n for key in self._keys}


def _computations(
    threshold: float = 0.5,
    spacing_feature: str = features.PIXEL_SPACING,
    name: str = "segmentation",
    values: tuple[str, ...] = (DICE, IOU, HD95),
    eval_config=None,
    model_names=None,
    output_names=None,
    example_weighted: bool = False,
):
    del name, eval_config

    return combiner_computations(
        values,
        model_names,
        output_names,
        example_weighted,
        lambda keys, _: _SegmentationCombiner(keys, threshold, spacing_feature),
        [spacing_feature, features.VOLUME_AFFINE],
    )


class SegmentationMetrics(metric_types.Metric):
    """TFMA metric: mean ``dice``, ``iou`` and ``hausdorff95_mm`` per slice.

    Args:
        threshold: probability at or above which a pixel is foreground.
        spacing_feature: example feature holding [row_mm, col_mm].
        name: metric name (the values keep their own names).
        values: which of ``dice``, ``iou``, ``hausdorff95_mm`` to report. A
            ``MetricConfig.threshold`` applies to every value its metric reports, so a
            blessing threshold on Dice goes on an instance reporting ``dice`` alone.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        spacing_feature: str = features.PIXEL_SPACING,
        name: str = "segmentation",
        values: tuple[str, ...] | list[str] = (DICE, IOU, HD95),
    ):
        unknown = {v for v in values if v not in (DICE, IOU, HD95) and not PER_LABEL.fullmatch(v)}
        if unknown or not values:
            raise ValueError(
                f"values={list(values)}: choose from {[DICE, IOU, HD95]} or per label "
                "dice_N, hausdorff95_mm_N, volume_error_ml_N"
            )
        super().__init__(
            _computations,
            threshold=threshold,
            spacing_feature=spacing_feature,
            name=name,
            values=tuple(values),
        )
