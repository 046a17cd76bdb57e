"""Evaluator settings for segmentation: Dice, IoU and HD95 (mm) computed inside TFMA.

The metric (:class:`components.models.tfma_segmentation.SegmentationMetrics`) reads the
``serve_examples`` signature's per-pixel ``probabilities``, the ingested ``mask`` label and
the ``pixel_spacing`` feature; blessing is on the overall mean Dice.
"""

from __future__ import annotations

import dataclasses
import json

from medflow.components.models.evaluation import floor_and_drop, sliced_eval_config
from medflow.components.tasks.segmentation.metrics import DICE, HD95, IOU
from medflow.core import features
from medflow.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SegmentationThresholds:
    """When the Evaluator blesses a segmentation model.

    Attributes:
        min_dice: absolute lower bound on the mean Dice of the overall slice.
        max_dice_drop: largest Dice decrease tolerated against the latest blessed model.
    """

    min_dice: float = 0.5
    max_dice_drop: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_dice <= 1.0:
            raise ConfigError(f"threshold min_dice={self.min_dice}: must be within [0, 1]")
        if self.max_dice_drop < 0:
            raise ConfigError(f"threshold max_dice_drop={self.max_dice_drop}: must be >= 0")


def _segmentation_metric(name: str, values: list[str], threshold=None):
    from medflow.components.models.compat import tfma

    config = {
        "threshold": 0.5,
        "spacing_feature": features.PIXEL_SPACING,
        "name": name,
        "values": values,
    }
    return tfma.MetricConfig(
        class_name="SegmentationMetrics",
        module="medflow.components.tasks.segmentation.tfma_metrics",
        config=json.dumps(config),
        threshold=threshold,
    )


def build_segmentation_eval_config(thresholds: SegmentationThresholds, labels=None):
    """TFMA EvalConfig: mean Dice/IoU/HD95 per slice, blessing on Dice (for a multi-label
    model the mean over its foreground labels), and per label when there are several."""
    from medflow.components.models.compat import tfma

    dice_threshold = floor_and_drop(thresholds.min_dice, thresholds.max_dice_drop)
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        # TFMA keys MetricsSpec.thresholds for in-graph metrics only; a Python metric's
        # threshold goes on its MetricConfig, which reports Dice alone for that reason.
        _segmentation_metric("dice", [DICE], threshold=dice_threshold),
        _segmentation_metric("segmentation", [IOU, HD95]),
    ]
    if labels is not None and len(labels) > 2:  # multi-label (volume) models: per label too
        per_label = [
            f"{name}_{c}" for c in range(1, len(labels)) for name in (DICE, HD95, "volume_error_ml")
        ]
        metrics.append(_segmentation_metric("per_label", per_label))
    return sliced_eval_config(features.MASK, "probabilities", metrics)
