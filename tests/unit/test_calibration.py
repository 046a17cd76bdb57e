"""Calibration (issue 21, item 1): an over-confident model becomes calibrated on held-out
data, the graph applies the same map as NumPy, and bad settings are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.components.models import calibration
from medflow.components.tasks.classification.trust import TrustSettings, crossfit, fit_outputs
from medflow.core.errors import ConfigError


def overconfident(n: int, seed: int):
    """Binary cases whose true P(y=1) is sigmoid(z) but whose model says sigmoid(4 z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    p1 = 1 / (1 + np.exp(-4 * z))
    return np.stack([1 - p1, p1], axis=1), y


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_an_overconfident_model_is_calibrated_on_held_out_data(method):
    fit_probs, fit_labels = overconfident(2000, seed=1)
    test_probs, test_labels = overconfident(2000, seed=2)
    cal = calibration.fit(method, fit_probs, fit_labels)
    before = calibration.expected_calibration_error(test_probs, test_labels)
    after = calibration.expected_calibration_error(cal.apply(test_probs), test_labels)
    assert before > 0.08
    assert after < 0.035
    assert calibration.brier_score(cal.apply(test_probs), test_labels) < calibration.brier_score(
        test_probs, test_labels
    )
    if method == "temperature":
        assert cal.params["temperature"] == pytest.approx(4.0, rel=0.15)


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic", "none"])
def test_the_graph_applies_the_same_map_as_numpy(method):
    import tensorflow as tf

    probs, labels = overconfident(500, seed=3)
    cal = calibration.fit(method, probs, labels)
    cal = calibration.Calibration.from_dict(cal.to_dict())  # as read back from JSON
    in_graph = cal.apply_tf(tf.constant(probs, tf.float32)).numpy()
    np.testing.assert_allclose(in_graph, cal.apply(probs), atol=2e-4)


def test_temperature_keeps_three_class_rankings_and_sums_to_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (300, 3))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=np.exp(r / 3) / np.exp(r / 3).sum()) for r in logits])
    out = calibration.fit("temperature", probs, labels).apply(probs)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-9)
    assert (out.argmax(1) == probs.argmax(1)).all()


def test_ece_and_reliability_of_a_known_case():
    # four cases at confidence 0.8 of which 3 are right, four at 0.6 of which 2 are right
    probs = np.array([[0.2, 0.8]] * 4 + [[0.6, 0.4]] * 4)
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 1])
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(
        0.5 * 0.05 + 0.5 * 0.1
    )
    rows = calibration.reliability(probs, labels)
    assert [(r["count"], r["accuracy"]) for r in rows] == [(4, 0.5), (4, 0.75)]
    assert calibration.brier_score(probs, labels) == pytest.approx(
        np.mean([0.04] * 3 + [0.64] + [0.16] * 2 + [0.36] * 2)
    )


def test_crossfit_judges_each_patient_half_by_the_other():
    probs, labels = overconfident(400, seed=4)
    groups = np.repeat(np.arange(100), 4)
    oof = crossfit("temperature", probs, labels, groups)
    assert oof.shape == probs.shape
    # out of fold differs from the in-sample map (two different temperatures)
    in_sample = calibration.fit("temperature", probs, labels).apply(probs)
    assert not np.allclose(oof, in_sample)
    _, _, report = fit_outputs(TrustSettings(bootstrap=0), probs, labels, groups)
    judged = report["calibration"]
    assert judged["after"]["ece"] < judged["before"]["ece"]
    assert "cross-fit" in judged["judged_on"]


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="calibration='beta'.*temperature"):
        TrustSettings(calibration="beta").validate(2)
    with pytest.raises(ConfigError, match="platt.*2 classes.*temperature"):
        TrustSettings(calibration="platt").validate(3)
    with pytest.raises(ConfigError, match="prevalence"):
        TrustSettings(prevalence=1.5).validate(2)


def test_a_degenerate_temperature_is_reported_with_what_to_do():
    from medflow.core.trust import trust_lines

    # every probability 0.55 for class 1 while 70% are class 0: only T -> infinity helps
    probs = np.tile([[0.45, 0.55]], (100, 1)) + np.linspace(0, 1e-3, 100)[:, None] * [-1, 1]
    labels = (np.arange(100) < 30).astype(np.int64)
    _, _, report = fit_outputs(TrustSettings(bootstrap=0), probs, labels, np.arange(100))
    assert "search bound" in report["calibration"]["note"]
    lines = trust_lines(report["calibration"], report.get("operating_point"), None)
    assert any(line.startswith("  note: the temperature is at its search bound") for line in lines)
    overconfident_probs, y = overconfident(300, seed=9)
    _, _, fine = fit_outputs(TrustSettings(bootstrap=0), overconfident_probs, y, np.arange(300))
    assert "note" not in fine["calibration"]
