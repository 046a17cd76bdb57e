"""Evaluator settings for registration: Dice and HD95 (mm) of the warped moving mask against
the fixed mask (before and after registration), folding and NCC, computed inside TFMA
(:class:`.tfma_metrics.RegistrationMetrics` on the ``serve_examples`` outputs and the
ingested ``fixed_mask``); blessing on the Dice after registration and a folding ceiling."""

from __future__ import annotations

import dataclasses
import json

from medflow.components.models.evaluation import floor_and_drop, sliced_eval_config
from medflow.core.errors import ConfigError

DICE_BEFORE, DICE_AFTER = "dice_before", "dice_after"
HD95_BEFORE, HD95_AFTER = "hd95_before_mm", "hd95_after_mm"  # 95th pct Hausdorff, mm
FOLDING, NCC = "folding_fraction", "ncc"
VALUES = (DICE_BEFORE, DICE_AFTER, HD95_BEFORE, HD95_AFTER, FOLDING, NCC)
LABEL_KEY = "fixed_mask"


@dataclasses.dataclass(frozen=True)
class RegistrationThresholds:
    """When the Evaluator blesses a registration model.

    Attributes:
        min_dice: lower bound on the mean Dice after registration (pairs with masks).
        max_dice_drop: largest Dice decrease tolerated against the latest blessed model.
        max_folding: upper bound on the mean share of pixels that fold (Jacobian <= 0).
    """

    min_dice: float = 0.6
    max_dice_drop: float = 0.01
    max_folding: float = 0.005

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_dice <= 1.0:
            raise ConfigError(f"threshold min_dice={self.min_dice}: must be within [0, 1]")
        if self.max_dice_drop < 0:
            raise ConfigError(f"threshold max_dice_drop={self.max_dice_drop}: must be >= 0")
        if not 0.0 <= self.max_folding <= 1.0:
            raise ConfigError(f"threshold max_folding={self.max_folding}: must be within [0, 1]")


def _metric(name: str, values: list[str], threshold=None):
    from medflow.components.models.compat import tfma

    return tfma.MetricConfig(
        class_name="RegistrationMetrics",
        module="medflow.components.tasks.registration.tfma_metrics",
        config=json.dumps({"name": name, "values": values}),
        threshold=threshold,
    )


def build_registration_eval_config(thresholds: RegistrationThresholds):
    """TFMA EvalConfig: Dice and HD95 before/after, folding and NCC per slice; blessing on Dice after
    registration (floor and allowed drop) and on folding (ceiling)."""
    from medflow.components.models.compat import tfma

    folding = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(upper_bound={"value": thresholds.max_folding})
    )
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        # one value per metric instance: a MetricConfig threshold applies to all it reports
        _metric(
            DICE_AFTER, [DICE_AFTER], floor_and_drop(thresholds.min_dice, thresholds.max_dice_drop)
        ),
        _metric(FOLDING, [FOLDING], folding),
        _metric("registration", [DICE_BEFORE, HD95_BEFORE, HD95_AFTER, NCC]),
    ]
    return sliced_eval_config(LABEL_KEY, "", metrics)
