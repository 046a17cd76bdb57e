"""What every task's Evaluator shares: the signature TFMA evaluates and the slices."""

from __future__ import annotations

from medflow.core import features

# Slicing features (strings written at ingestion), overall slice first.
SLICES = features.SLICE_FEATURES


def sliced_eval_config(label_key: str, prediction_key: str, metrics: list):
    """The EvalConfig of every task: the ``serve_examples`` signature (raw examples in, the
    Transform graph inside), ``metrics`` overall and per value of each :data:`SLICES` feature."""
    from medflow.components.models.compat import tfma

    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serve_examples",
                label_key=label_key,
                prediction_key=prediction_key,
                preprocessing_function_names=[],
            )
        ],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[f]) for f in SLICES],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )


def per_model_and_output(
    values, model_names, output_names, example_weighted: bool, computation
) -> list:
    """One TFMA ``MetricComputation`` per (model, output) pair, as a custom metric's
    ``create_computations`` returns them: ``computation(keys, model_name)`` builds it for the
    ``MetricKey`` s of ``values`` (metric names) of that pair."""
    from tensorflow_model_analysis.metrics import metric_types

    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            keys = [
                metric_types.MetricKey(
                    name=v,
                    model_name=model_name,
                    output_name=output_name,
                    example_weighted=example_weighted,
                )
                for v in values
            ]
            computations.append(computation(keys, model_name))
    return computations


def combiner_computations(
    values, model_names, output_names, example_weighted: bool, combiner, feature_names=()
) -> list:
    """:func:`per_model_and_output` for the usual custom metric: one ``MetricComputation``
    whose ``combiner(keys, model_name)`` sees the default inputs (labels, predictions) plus
    the transformed features ``feature_names`` (none: no preprocessor)."""
    from tensorflow_model_analysis.metrics import metric_types

    preprocessors = (
        [metric_types.FeaturePreprocessor(list(feature_names))] if feature_names else None
    )

    def computation(keys, model_name):
        return metric_types.MetricComputation(
            keys=keys, preprocessors=preprocessors, combiner=combiner(keys, model_name)
        )

    return per_model_and_output(values, model_names, output_names, example_weighted, computation)


def floor_and_drop(floor: float, max_drop: float):
    """A TFMA threshold for a higher-is-better metric: at least ``floor``, and at most
    ``max_drop`` below the baseline model's value."""
    from medflow.components.models.compat import tfma

    return tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": floor}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -max_drop},
        ),
    )
