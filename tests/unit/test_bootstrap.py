"""Bootstrap intervals (issue 21, item 3): close to the analytic interval of a known case,
shrinking as the sample grows, covering the true value in a simulation, and resampling
patients rather than cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medflow.components.models import bootstrap


def test_proportion_interval_matches_the_analytic_wald_interval():
    # 400 cases, 300 hits: Wald 95% interval 0.75 +- 1.96 * sqrt(0.75 * 0.25 / 400)
    values = np.array([1.0] * 300 + [0.0] * 100)
    out = bootstrap.mean_interval(values, np.arange(400), replicates=4000, seed=1)
    half = 1.96 * np.sqrt(0.75 * 0.25 / 400)
    assert out["value"] == 0.75
    assert out["lower"] == pytest.approx(0.75 - half, abs=0.006)
    assert out["upper"] == pytest.approx(0.75 + half, abs=0.006)


def test_interval_shrinks_as_the_sample_grows():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 200, 800):
        values = rng.normal(0.8, 0.1, n)
        out = bootstrap.mean_interval(values, np.arange(n), replicates=500)
        widths.append(out["upper"] - out["lower"])
    assert widths[0] > 1.6 * widths[1] > 1.6**2 * widths[2]


def test_auc_interval_covers_the_true_auc_in_a_simulation():
    # scores N(0,1) for negatives, N(1,1) for positives: true AUC = Phi(1 / sqrt 2)
    from scipy.stats import norm

    true_auc = norm.cdf(1 / np.sqrt(2))
    rng = np.random.default_rng(7)
    covered, runs = 0, 60
    for run in range(runs):
        labels = rng.random(120) < 0.5
        scores = rng.normal(labels.astype(float), 1.0)
        out = bootstrap.binary_intervals(
            labels, scores, np.arange(120), 0.5, 0.5, replicates=300, seed=run
        )["auc"]
        covered += out["lower"] <= true_auc <= out["upper"]
    # 95% nominal; 60 runs: a coverage below 0.85 would be a real fault (binomial p < 0.01)
    assert covered / runs >= 0.85


def test_patient_resampling_widens_the_interval_of_correlated_cases():
    # 40 patients, 10 identical cases each: the data hold 40 independent values, not 400
    rng = np.random.default_rng(3)
    per_patient = rng.normal(0.8, 0.1, 40)
    values = np.repeat(per_patient, 10)
    by_case = bootstrap.mean_interval(values, np.arange(400), replicates=1000)
    by_patient = bootstrap.mean_interval(values, np.repeat(np.arange(40), 10), replicates=1000)
    width = by_patient["upper"] - by_patient["lower"]
    assert width > 2.5 * (by_case["upper"] - by_case["lower"])
    assert width == pytest.approx(2 * 1.96 * per_patient.std() / np.sqrt(40), rel=0.2)


def test_binary_intervals_of_a_known_case():
    labels = np.array([1] * 50 + [0] * 50)
    scores = np.array([0.9] * 45 + [0.1] * 5 + [0.1] * 40 + [0.9] * 10)
    out = bootstrap.binary_intervals(labels, scores, np.arange(100), 0.5, 0.1, replicates=500)
    assert out["sensitivity"]["value"] == 0.9 and out["specificity"]["value"] == 0.8
    assert out["accuracy"]["value"] == pytest.approx(0.85)
    ppv, npv = bootstrap.predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(0.09 / (0.09 + 0.18)) and npv == pytest.approx(0.72 / 0.73)
    assert out["ppv"]["value"] == pytest.approx(ppv)
    assert bootstrap.auc(labels, scores) == pytest.approx(out["auc"]["value"])
    for m in out.values():
        assert m["lower"] <= m["value"] <= m["upper"]


def test_auc_handles_ties_and_one_class():
    assert bootstrap.auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert np.isnan(bootstrap.auc(np.array([1, 1]), np.array([0.2, 0.4])))


def _tfma_inputs(labels, scores, patients):
    from tensorflow_model_analysis.metrics import metric_types

    return [
        metric_types.StandardMetricInputs(
            labels=np.array([y]),
            # every output of the serve_examples signature, as the Evaluator passes them
            predictions={
                "score": np.array([s], np.float32),
                "class_id": np.array([int(s > 0.5)]),
                "probabilities": np.array([[1 - s, s]], np.float32),
            },
            features={"patient_id": np.array([p.encode()])},
        )
        for y, s, p in zip(labels, scores, patients, strict=True)
    ]


def test_tfma_auc_interval_resamples_patients_in_beam():
    import apache_beam as beam
    from apache_beam.testing.util import assert_that
    from tensorflow_model_analysis.metrics import metric_types

    from medflow.components.tasks.classification.evaluation import (
        BlessingThresholds,
        build_eval_config,
    )
    from medflow.components.tasks.classification.tfma_metrics import AUCInterval

    rng = np.random.default_rng(5)
    labels = rng.random(300) < 0.5
    scores = rng.normal(labels.astype(float), 1.0)
    patients = [f"p{i // 3}" for i in range(300)]
    eval_config = build_eval_config(BlessingThresholds())  # prediction_key "score"
    (computation,) = AUCInterval(replicates=300).computations(eval_config=eval_config)
    expected = bootstrap.bootstrap(
        lambda idx: bootstrap.auc(labels[idx], scores[idx]), patients, 300
    )

    def check(got):
        (values,) = got
        by_name = {k.name: v for k, v in values.items()}
        assert (by_name["auc_lower"], by_name["auc_upper"]) == pytest.approx(expected, abs=1e-6)
        assert by_name["auc_lower"] < bootstrap.auc(labels, scores) < by_name["auc_upper"]

    with beam.Pipeline() as p:
        out = (
            p
            | beam.Create(_tfma_inputs(labels, scores, patients))
            | beam.CombineGlobally(computation.combiner).without_defaults()
        )
        assert_that(out, check)
    assert isinstance(computation, metric_types.MetricComputation)


def test_blessing_on_the_auc_lower_bound():
    from medflow.components.tasks.classification.evaluation import (
        BlessingThresholds,
        build_eval_config,
    )
    from medflow.pipelines.config import PipelineConfig

    config = build_eval_config(BlessingThresholds(min_auc_lower=0.9))
    (lower,) = [m for s in config.metrics_specs for m in s.metrics if '"auc_lower"' in m.config]
    assert json.loads(lower.config)["name"] == "auc_lower"  # TFMA keys thresholds by it
    assert lower.threshold.value_threshold.lower_bound.value == 0.9
    (unset,) = [
        m
        for s in build_eval_config(BlessingThresholds()).metrics_specs
        for m in s.metrics
        if '"auc_lower"' in m.config
    ]
    assert not unset.HasField("threshold")  # reported, not gated
    PipelineConfig(data_root="/x", labels=("a", "b"), thresholds={"min_auc_lower": 0.9})
    with pytest.raises(Exception, match="min_auc_lower=1.5"):
        BlessingThresholds.from_dict({"min_auc_lower": 1.5})
