"""TFMA metric: the 95% patient-level bootstrap interval of the AUC, per slice, inside the
Evaluator (so blessing can rest on the lower bound: ``--threshold min_auc_lower=0.9``).

TFMA's own confidence intervals resample examples, not patients; this metric collects
(label, score, ``patient_id``) of every example of a slice and resamples patients
(:mod:`components.models.bootstrap`). Reported values: ``auc_lower`` and ``auc_upper``.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util

from medflow.components.models import bootstrap
from medflow.components.models.evaluation import combiner_computations
from medflow.core import features

AUC_LOWER, AUC_UPPER = "auc_lower", "auc_upper"
VALUES = (AUC_LOWER, AUC_UPPER)


def _flat(value) -> np.ndarray:
    return np.asarray(value).reshape(-1)


class _AUCIntervalCombiner(beam.CombineFn):
    """Collects (label, score, patient) of a slice; the bootstrap interval at the end."""

    def __init__(self, keys, eval_config, model_name: str, output_name: str, replicates: int):
        self._keys = keys
        self._eval_config = eval_config
        self._model_name = model_name
        self._output_name = output_name
        self._replicates = replicates

    def create_accumulator(self):
        return ([], [], [])

    def add_input(self, acc, element):
        # the model spec's label and prediction keys, baseline keying, as TFMA's own metrics
        label, score, _ = next(
            metric_util.to_label_prediction_example_weight(
                element, self._eval_config, self._model_name, self._output_name
            )
        )
        patient = _flat((element.features or {}).get(features.PATIENT_ID, [b""]))
        patient = patient[0].decode() if isinstance(patient[0], bytes) else str(patient[0])
        acc[0].append(int(_flat(label)[0]))
        acc[1].append(float(_flat(score)[0]))
        acc[2].append(patient or f"case-{len(acc[2])}")
        return acc

    def merge_accumulators(self, accumulators):
        out = ([], [], [])
        for acc in accumulators:
            for mine, theirs in zip(out, acc, strict=True):
                mine.extend(theirs)
        return out

    def extract_output(self, acc):
        labels, scores = np.asarray(acc[0]), np.asarray(acc[1])
        if len(labels) == 0:
            low = high = float("nan")
        else:

            def auc(idx):
                return bootstrap.auc(labels[idx], scores[idx])

            low, high = bootstrap.bootstrap(auc, acc[2], self._replicates)
        values = {AUC_LOWER: low, AUC_UPPER: high}
        return {key: values[key.name] for key in self._keys}


def _computations(
    name: str = "auc_interval",
    values=VALUES,
    replicates: int = bootstrap.REPLICATES,
    eval_config=None,
    model_names=None,
    output_names=None,
    example_weighted: bool = False,
):
    del name

    def combiner(keys, model_name):
        return _AUCIntervalCombiner(keys, eval_config, model_name, keys[0].output_name, replicates)

    # the patient id beside the default inputs (labels, predictions)
    return combiner_computations(
        values, model_names, output_names, example_weighted, combiner, [features.PATIENT_ID]
    )


class AUCInterval(metric_types.Metric):
    """TFMA metric: ``auc_lower`` / ``auc_upper``, the patient-level bootstrap interval.

    Args:
        name: metric name (the values keep their own names).
        values: which of :data:`VALUES` to report (a threshold applies to every value its
            metric reports, so blessing goes on an instance reporting ``auc_lower`` alone).
        replicates: bootstrap replicates.
    """

    def __init__(
        self, name: str = "auc_interval", values=VALUES, replicates: int = bootstrap.REPLICATES
    ):
        unknown = set(values) - set(VALUES)
        if unknown or not values:
            raise ValueError(f"values={list(values)}: choose from {list(VALUES)}")
        super().__init__(_computations, name=name, values=tuple(values), replicates=replicates)
