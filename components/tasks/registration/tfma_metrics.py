"""TFMA metric computing registration quality inside the Evaluator.

Reads the ``serve_examples`` outputs (``warped_mask``, ``moving_mask``,
``folding_fraction``, ``ncc``), the label ``fixed_mask`` (raw uint8 bytes of the ingested
pair) and the ``has_masks`` feature, and averages per pair over each slice:
``dice_before`` (moving mask vs fixed mask) and ``dice_after`` (warped moving mask >= 0.5 vs
fixed mask) over pairs with masks, ``folding_fraction`` and ``ncc`` over all pairs.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from medflow.components.models.evaluation import combiner_computations
from medflow.components.tasks.registration.evaluation import (
    DICE_AFTER,
    DICE_BEFORE,
    FOLDING,
    NCC,
    VALUES,
)
from medflow.components.tasks.registration.losses import dice

HAS_MASKS = "has_masks"


def _mask(label, shape) -> np.ndarray:
    value = np.asarray(label).reshape(-1)
    if value.dtype.kind in ("S", "O"):
        return np.frombuffer(value[0], dtype=np.uint8).reshape(shape) > 0
    return value.reshape(shape) > 0


class _RegistrationCombiner(beam.CombineFn):
    """Sums of per-pair Dice (pairs with masks) and folding / NCC (all pairs)."""

    def __init__(self, keys, model_name: str):
        self._keys = keys
        self._model_name = model_name

    def create_accumulator(self):
        return [0.0, 0.0, 0, 0.0, 0.0, 0]  # dice before, after, n masked; folding, ncc, n

    def add_input(self, acc, element):
        out = element.prediction
        if self._model_name in out and isinstance(out[self._model_name], dict):
            out = out[self._model_name]  # keyed by model name when a baseline is evaluated
        warped = np.asarray(out["warped_mask"], np.float32)
        shape = warped.shape[-2:]
        acc[3] += float(np.asarray(out["folding_fraction"]).reshape(-1)[0])
        acc[4] += float(np.asarray(out["ncc"]).reshape(-1)[0])
        acc[5] += 1
        has = (element.features or {}).get(HAS_MASKS)
        if has is not None and int(np.asarray(has).reshape(-1)[0]):
            label = element.label
            if isinstance(label, dict):
                label = label.get(self._model_name, next(iter(label.values())))
            fixed = _mask(label, shape)
            moving = np.asarray(out["moving_mask"]).reshape(shape) >= 0.5
            acc[0] += dice(moving, fixed)
            acc[1] += dice(warped.reshape(shape) >= 0.5, fixed)
            acc[2] += 1
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out = [a + b for a, b in zip(out, acc, strict=True)]
        return out

    def extract_output(self, acc):
        masked, n = max(acc[2], 1), max(acc[5], 1)
        means = {
            DICE_BEFORE: acc[0] / masked,
            DICE_AFTER: acc[1] / masked,
            FOLDING: acc[3] / n,
            NCC: acc[4] / n,
        }
        return {key: means[key.name] for key in self._keys}


def _computations(
    name: str = "registration",
    values: tuple[str, ...] = VALUES,
    eval_config=None,
    model_names=None,
    output_names=None,
    example_weighted: bool = False,
):
    del name, eval_config

    return combiner_computations(
        values, model_names, output_names, example_weighted, _RegistrationCombiner, [HAS_MASKS]
    )


class RegistrationMetrics(metric_types.Metric):
    """TFMA metric: mean ``dice_before``, ``dice_after``, ``folding_fraction``, ``ncc``.

    Args:
        name: metric name (the values keep their own names).
        values: which of them to report (a ``MetricConfig.threshold`` applies to every value
            its metric reports, so a blessing threshold goes on an instance reporting one).
    """

    def __init__(self, name: str = "registration", values: tuple[str, ...] | list[str] = VALUES):
        unknown = set(values) - set(VALUES)
        if unknown or not values:
            raise ValueError(f"values={list(values)}: choose from {list(VALUES)}")
        super().__init__(_computations, name=name, values=tuple(values))
