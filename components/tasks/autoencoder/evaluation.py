"""Evaluator settings for autoencoders: mean reconstruction error and ELBO in TFMA, blessing
on the reconstruction error (lower is better); for a guard, its false-alarm rate on eval."""

from __future__ import annotations

import dataclasses
import json

from medflow.components.models.evaluation import sliced_eval_config
from medflow.components.tasks.autoencoder.tfma_metrics import (
    ELBO,
    FALSE_ALARM_RATE,
    RECONSTRUCTION_ERROR,
)
from medflow.core.errors import ConfigError

MODULE = "medflow.components.tasks.autoencoder.tfma_metrics"


@dataclasses.dataclass(frozen=True)
class ReconstructionThresholds:
    """When the Evaluator blesses an autoencoder.

    Attributes:
        max_error: upper bound on the eval split's mean squared reconstruction error in
            normalised units; 1.0 is what predicting the mean image scores, so the default
            asks the model to beat that.
        max_error_increase: largest increase tolerated against the latest blessed model.
    """

    max_error: float = 1.0
    max_error_increase: float = 0.05

    def __post_init__(self) -> None:
        if self.max_error <= 0 or self.max_error_increase < 0:
            raise ConfigError(
                f"thresholds max_error={self.max_error}, max_error_increase="
                f"{self.max_error_increase}: need max_error > 0 and max_error_increase >= 0"
            )


def _metric(name: str, values: list[str], threshold=None):
    from medflow.components.models.compat import tfma

    config = json.dumps({"name": name, "values": values})
    return tfma.MetricConfig(
        class_name="ReconstructionMetrics", module=MODULE, config=config, threshold=threshold
    )


def build_autoencoder_eval_config(thresholds: ReconstructionThresholds):
    """TFMA EvalConfig: mean reconstruction error (blessing) and mean ELBO per slice."""
    from medflow.components.models.compat import tfma

    error_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(upper_bound={"value": thresholds.max_error}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER,
            absolute={"value": thresholds.max_error_increase},
        ),
    )
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        _metric(RECONSTRUCTION_ERROR, [RECONSTRUCTION_ERROR], error_threshold),
        _metric(ELBO, [ELBO]),
    ]
    return sliced_eval_config("", "score", metrics)


def build_guard_eval_config():
    """TFMA EvalConfig of a guard on the eval split: its false-alarm rate at the calibrated
    threshold (the share of eval examples flagged out of distribution) and mean
    reconstruction error per slice; no blessing (the guarded model's Evaluator blesses)."""
    from medflow.components.models.compat import tfma

    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        _metric("guard", [FALSE_ALARM_RATE, RECONSTRUCTION_ERROR]),
    ]
    return sliced_eval_config("", "score", metrics)
