"""TFMA metric computing registration quality inside the Evaluator.

Reads the ``serve_examples`` outputs (``warped_mask``, ``moving_mask``,
``folding_fraction``, ``ncc``), the label ``fixed_mask`` (raw uint8 bytes of the ingested
pair) and the ``has_masks`` and ``pixel_spacing`` (mm of a model-grid pixel of the fixed
image) features, and averages per pair over each slice: ``dice_before`` /
``hd95_before_mm`` (moving mask vs fixed mask) and ``dice_after`` / ``hd95_after_mm``
(warped moving mask >= 0.5 vs fixed mask) over pairs with masks, ``folding_fraction`` and
``ncc`` over all pairs.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from medflow.components.models.evaluation import combiner_computations
from medflow.components.tasks.registration.evaluation import FOLDING, NCC, VALUES
from medflow.components.tasks.registration.losses import mask_scores
from medflow.components.tasks.segmentation.metrics import mask_from_label, spacing_of
from medflow.core import features

HAS_MASKS = "has_masks"
_MASKED = tuple(v for v in VALUES if v not in (FOLDING, NCC))  # over pairs with masks


class _RegistrationCombiner(beam.CombineFn):
    """Sums of per-pair Dice and HD95 (pairs with masks) and folding / NCC (all pairs)."""

    def __init__(self, keys, model_name: str):
        self._keys = keys
        self._model_name = model_name

    def create_accumulator(self):
        return {"n": 0, "masked": 0}

    def add_input(self, acc, element):
        out = element.prediction
        if self._model_name in out and isinstance(out[self._model_name], dict):
            out = out[self._model_name]  # keyed by model name when a baseline is evaluated
        warped = np.asarray(out["warped_mask"], np.float32)
        shape = warped.shape[-2:]
        values = {
            FOLDING: float(np.asarray(out["folding_fraction"]).reshape(-1)[0]),
            NCC: float(np.asarray(out["ncc"]).reshape(-1)[0]),
        }
        acc["n"] += 1
        feats = element.features or {}
        has = feats.get(HAS_MASKS)
        if has is not None and int(np.asarray(has).reshape(-1)[0]):
            label = element.label
            if isinstance(label, dict):
                label = label.get(self._model_name, next(iter(label.values())))
            values |= mask_scores(
                mask_from_label(label, shape),
                np.asarray(out["moving_mask"]).reshape(shape),
                warped.reshape(shape),
                spacing_of(feats.get(features.PIXEL_SPACING)),
            )
            acc["masked"] += 1
        for name, value in values.items():
            acc[name] = acc.get(name, 0.0) + value
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            for name, value in acc.items():
                out[name] = out.get(name, 0) + value
        return out

    def extract_output(self, acc):
        def mean(name):
            return acc.get(name, 0.0) / max(acc["masked" if name in _MASKED else "n"], 1)

        return {key: mean(key.name) for key in self._keys}


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
        values,
        model_names,
        output_names,
        example_weighted,
        _RegistrationCombiner,
        [HAS_MASKS, features.PIXEL_SPACING],
    )


class RegistrationMetrics(metric_types.Metric):
    """TFMA metric: mean ``dice_before``, ``dice_after``, ``hd95_before_mm``,
    ``hd95_after_mm``, ``folding_fraction``, ``ncc``.

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
