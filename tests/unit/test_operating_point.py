"""Operating point (issue 21, item 2): each rule meets its target on the split it was chosen
on, the exported head applies it, and rules that cannot be met are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.components.models.operating_point import Rule, choose, decide, rates
from medflow.components.tasks.classification.trust import TrustSettings, check_eval_split
from medflow.core.errors import ConfigError, InputError


def scored(n: int = 301, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    scores = np.clip(rng.normal(np.where(labels, 0.65, 0.35), 0.18), 0, 1).astype(np.float32)
    return scores, labels.astype(np.int64)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 0.99, 1.0])
def test_sensitivity_rule_meets_its_target_with_the_highest_cut_off(target):
    scores, labels = scored()
    point = choose(Rule.parse(f"sensitivity={target}"), scores, labels)
    assert point.sensitivity >= target
    assert rates(scores, labels, point.threshold) == (point.sensitivity, point.specificity)
    # any higher cut-off among the scores loses the target
    higher = scores[scores > point.threshold]
    if len(higher):
        assert rates(scores, labels, float(higher.min()))[0] < target


@pytest.mark.parametrize("target", [0.5, 0.9, 0.97])
def test_specificity_rule_meets_its_target_with_the_lowest_cut_off(target):
    scores, labels = scored(seed=1)
    point = choose(Rule.parse(f"specificity={target}"), scores, labels)
    assert point.specificity >= target
    lower = scores[scores < point.threshold]
    assert rates(scores, labels, float(lower.max()))[1] < target


def test_youden_maximises_sensitivity_plus_specificity():
    scores, labels = scored(seed=2)
    point = choose(Rule.parse("youden"), scores, labels)
    best = max(sum(rates(scores, labels, t)) for t in np.unique(scores))
    assert point.sensitivity + point.specificity == pytest.approx(best)


def test_threshold_rule_is_taken_as_given_and_decide_calls_at_or_above():
    scores, labels = scored(seed=3)
    point = choose(Rule.parse("threshold=0.4"), scores, labels)
    assert point.threshold == 0.4 and point.rule == "threshold=0.4"
    assert decide(np.array([0.39, 0.4, 0.41]), 0.4).tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    "text, message",
    [
        ("sensitivity=1.01", "within \\[0, 1\\]"),
        ("specificity=-0.1", "within \\[0, 1\\]"),
        ("sensitivity=high", "not a number"),
        ("recall=0.9", "use youden, sensitivity=0.95"),
        ("youden=1", "use youden"),
    ],
)
def test_bad_rules_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        Rule.parse(text)
    assert "\n" not in str(info.value)


def test_bad_rule_is_refused_by_the_task_before_the_pipeline_runs():
    from medflow.pipelines.config import PipelineConfig

    with pytest.raises(ConfigError, match="sensitivity=1.01"):
        PipelineConfig(
            data_root="/x",
            hyperparameters={"operating_point": "sensitivity=1.01"},
            labels=("a", "b"),
        )
    with pytest.raises(ConfigError, match="needs 2 classes"):
        TrustSettings(operating_point="sensitivity=0.9").validate(3)


def test_an_eval_split_with_one_class_is_refused_before_training():
    settings = TrustSettings(operating_point="sensitivity=0.95")
    with pytest.raises(InputError, match="eval split has no negative \\(class 0\\)") as info:
        check_eval_split(settings, {1: 40}, 2)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="no positive"):
        choose(Rule.parse("youden"), np.array([0.1, 0.2]), np.array([0, 0]))
    check_eval_split(TrustSettings(operating_point="threshold=0.3"), {1: 40}, 2)  # no choice


def test_the_exported_head_applies_calibration_and_the_cut_off():
    import tensorflow as tf

    from medflow.components.models.calibration import Calibration
    from medflow.components.tasks.classification.export import classification_head

    head = classification_head(
        ("normal", "pneumonia"), Calibration("temperature", {"temperature": 2.0}), 0.3
    )
    out = head(tf.constant([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]))
    p1 = out["score"].numpy()
    expected = np.sqrt([0.1, 0.4, 0.8]) / (np.sqrt([0.1, 0.4, 0.8]) + np.sqrt([0.9, 0.6, 0.2]))
    np.testing.assert_allclose(p1, expected, rtol=1e-5)
    assert out["class_id"].numpy().tolist() == decide(p1, 0.3).tolist() == [0, 1, 1]
    assert [x.decode() for x in out["class_name"].numpy()] == ["normal", "pneumonia", "pneumonia"]
    np.testing.assert_allclose(out["threshold"].numpy(), [0.3] * 3)
    assert "threshold" not in classification_head(("a", "b"))(tf.constant([[0.5, 0.5]]))


TRUST = {
    "calibration": {
        "method": "temperature",
        "params": {"temperature": 1.8},
        "before": {"ece": 0.081, "brier": 0.12},
        "after": {"ece": 0.021, "brier": 0.10},
        "judged_on": "eval split, 2-fold patient cross-fit (out-of-fold)",
    },
    "operating_point": {
        "rule": "sensitivity=0.95",
        "threshold": 0.3125,
        "sensitivity": 0.951,
        "specificity": 0.702,
        "split": "eval",
    },
    "intervals": {
        "level": 0.95,
        "resampling": "patient",
        "prevalence": 0.3,
        "split": "eval",
        "metrics": {"auc": {"value": 0.93, "lower": 0.9, "upper": 0.955}},
    },
}


def test_run_summary_shows_the_operating_point_calibration_and_intervals(tmp_path):
    import json

    from medflow.pipelines.run_summary import format_summary, trust_report

    info = tmp_path / "Format-Serving" / "assets.extra" / "training.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"backbone": "small_cnn", "trust": TRUST}))
    text = format_summary({"trust": trust_report(str(tmp_path)), "blessed": True})
    assert "operating point sensitivity=0.95: cut-off 0.3125" in text
    assert "sensitivity 0.951, specificity 0.702" in text
    assert "calibration temperature (temperature=1.8): ECE 0.081 -> 0.021" in text
    assert "95% intervals (patient-level bootstrap on eval; PPV/NPV at prevalence 0.300)" in text
    assert "  auc 0.930 [0.900, 0.955]" in text.splitlines()
    assert trust_report(str(tmp_path / "nothing")) == {}
