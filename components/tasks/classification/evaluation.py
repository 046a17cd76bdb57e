"""Evaluator settings: TFMA metrics, slices and blessing thresholds for a binary classifier."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from medflow.components.models.evaluation import floor_and_drop, sliced_eval_config
from medflow.core import features
from medflow.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class BlessingThresholds:
    """When the Evaluator blesses a model.

    Attributes:
        min_auc: absolute lower bound on the overall AUC.
        min_accuracy: absolute lower bound on the overall accuracy (threshold 0.5).
        max_auc_drop: largest AUC decrease tolerated against the latest blessed model.
        specificity: operating point reported as ``sensitivity_at_specificity``.
        sensitivity: operating point reported as ``specificity_at_sensitivity``.
        min_auc_lower: lower bound on the lower end of the AUC's 95% patient-level
            bootstrap interval (``auc_lower``; 0: reported, not gated).
    """

    min_auc: float = 0.8
    min_accuracy: float = 0.0
    max_auc_drop: float = 0.01
    specificity: float = 0.9
    sensitivity: float = 0.9
    min_auc_lower: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_auc", "min_accuracy", "specificity", "sensitivity", "min_auc_lower"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"threshold {name}={value}: must be within [0, 1]")
        if self.max_auc_drop < 0:
            raise ConfigError(f"threshold max_auc_drop={self.max_auc_drop}: must be >= 0")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> BlessingThresholds:
        values = dict(values or {})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown threshold(s) {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in values.items()})


def _metric(name: str, threshold=None, **config: Any):
    from medflow.components.models.compat import tfma

    return tfma.MetricConfig(
        class_name=name, config=json.dumps(config) if config else "", threshold=threshold
    )


def _auc_interval(min_lower: float) -> list:
    """``auc_lower`` (gated by ``min_lower``) and ``auc_upper``: the AUC's patient-level
    bootstrap interval (:mod:`.tfma_metrics`), one metric instance each, since a threshold
    applies to every value of its instance."""
    from medflow.components.models.compat import tfma
    from medflow.components.tasks.classification.tfma_metrics import AUC_LOWER, AUC_UPPER

    lower = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_lower})
    )
    # TFMA matches a threshold to the value named like its metric instance
    return [
        tfma.MetricConfig(
            class_name="AUCInterval",
            module="medflow.components.tasks.classification.tfma_metrics",
            config=json.dumps({"name": value, "values": [value]}),
            threshold=threshold,
        )
        for value, threshold in ((AUC_LOWER, lower if min_lower > 0 else None), (AUC_UPPER, None))
    ]


def build_eval_config(thresholds: BlessingThresholds, n_classes: int = 2):
    """TFMA EvalConfig on the ``serve_examples`` signature's ``score`` output.

    Blessing requires AUC >= ``min_auc`` and accuracy >= ``min_accuracy`` on the overall
    slice, and an AUC no lower than the baseline's minus ``max_auc_drop`` when a blessed
    baseline exists (TFMA ignores change thresholds on a first run).
    """
    from medflow.components.models.compat import tfma

    if n_classes != 2:
        raise ConfigError(
            f"{n_classes} labels: the Evaluator is configured for binary classification "
            "only; give exactly 2 labels"
        )
    auc_threshold = floor_and_drop(thresholds.min_auc, thresholds.max_auc_drop)
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": thresholds.min_accuracy})
    )
    metrics = [
        _metric("ExampleCount"),
        _metric("AUC", auc_threshold),
        _metric("AUCPrecisionRecall"),
        _metric("BinaryAccuracy", accuracy_threshold),
        _metric("Precision"),
        _metric("Recall"),
        _metric("SensitivityAtSpecificity", specificity=thresholds.specificity),
        _metric("SpecificityAtSensitivity", sensitivity=thresholds.sensitivity),
        _metric("Calibration"),
        _metric("MeanPrediction"),
        _metric("MeanLabel"),
        _metric("CalibrationPlot"),
        _metric("ConfusionMatrixPlot"),
        *_auc_interval(thresholds.min_auc_lower),
    ]
    return sliced_eval_config(features.LABEL, "score", metrics)
