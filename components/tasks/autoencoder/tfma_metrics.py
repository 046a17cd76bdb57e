"""TFMA metric of an autoencoder inside the Evaluator: the mean reconstruction error
(``reconstruction_error``) and, for a VAE, the mean ELBO (``elbo``) per slice, from the
``serve_examples`` signature's ``score`` and ``elbo`` outputs (no label is read); for a guard,
its false-alarm rate (``false_alarm_rate``: the share of the evaluated, in-distribution
examples whose ``score`` is above the calibrated ``threshold`` its ``serve_examples`` also
returns). Configure it with ``MetricConfig(class_name="ReconstructionMetrics",
module=__name__)``."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from medflow.components.models.evaluation import combiner_computations
from medflow.components.tasks.autoencoder.export import THRESHOLD

RECONSTRUCTION_ERROR = "reconstruction_error"
ELBO = "elbo"
FALSE_ALARM_RATE = "false_alarm_rate"
# What each value averages over a slice: (the outputs it needs, its per-image value).
VALUE_OF = {
    RECONSTRUCTION_ERROR: (("score",), lambda p: p["score"]),
    ELBO: (("elbo",), lambda p: p["elbo"]),
    FALSE_ALARM_RATE: (("score", THRESHOLD), lambda p: float(p["score"] > p[THRESHOLD])),
}


class _MeanOutputs(beam.CombineFn):
    """Means of per-image outputs over a slice (an output the model lacks is NaN)."""

    def __init__(self, keys):
        self._keys = keys

    def create_accumulator(self):
        return {key.name: [0.0, 0] for key in self._keys}

    def add_input(self, acc, element):
        prediction = element.prediction
        if not isinstance(prediction, dict):
            return acc
        for name, (total, n) in acc.items():
            outputs, value = VALUE_OF[name]
            if all(k in prediction for k in outputs):
                scalars = {k: float(np.ravel(prediction[k])[0]) for k in outputs}
                acc[name] = [total + float(value(scalars)), n + 1]
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            for name, (total, n) in acc.items():
                out[name] = [out[name][0] + total, out[name][1] + n]
        return out

    def extract_output(self, acc):
        return {
            key: acc[key.name][0] / acc[key.name][1] if acc[key.name][1] else float("nan")
            for key in self._keys
        }


def _computations(
    name: str = "reconstruction",
    values: tuple[str, ...] = (RECONSTRUCTION_ERROR,),
    eval_config=None,
    model_names=None,
    output_names=None,
    example_weighted: bool = False,
):
    del name, eval_config

    return combiner_computations(
        values, model_names, output_names, example_weighted, lambda keys, _: _MeanOutputs(keys)
    )


class ReconstructionMetrics(metric_types.Metric):
    """TFMA metric: mean ``reconstruction_error``, ``elbo`` and/or ``false_alarm_rate`` per
    slice.

    Args:
        name: metric name (the values keep their own names).
        values: which of ``reconstruction_error``, ``elbo``, ``false_alarm_rate`` to report
            (a threshold applies to every value its metric reports).
    """

    def __init__(
        self,
        name: str = "reconstruction",
        values: tuple[str, ...] | list[str] = (RECONSTRUCTION_ERROR,),
    ):
        unknown = set(values) - set(VALUE_OF)
        if unknown or not values:
            raise ValueError(f"values={list(values)}: choose from {sorted(VALUE_OF)}")
        super().__init__(_computations, name=name, values=tuple(values))
