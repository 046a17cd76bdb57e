"""The segmentation mask threshold (issue 21): chosen on eval for Dice, parsed from
``--operating-point``, baked into the exported head; Dice / HD95 intervals beside it."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.components.tasks.segmentation import trust
from medflow.core.errors import ConfigError


def _known_case():
    """Foreground pixels at 0.305, a band of background at 0.295, the rest at 0.1: only a
    cut-off in (0.295, 0.305] gives Dice 1, and the grid's only such value is 0.30."""
    masks = np.zeros((4, 16, 16), bool)
    masks[:, 4:12, 4:12] = True
    probs = np.where(masks, 0.305, 0.1).astype(np.float32)
    probs[:, 2:4, :] = 0.295
    return probs, masks


def test_the_chosen_threshold_is_the_known_dice_maximiser():
    probs, masks = _known_case()
    assert trust.choose_threshold(probs, masks) == pytest.approx(0.30)
    assert trust.dice_at(probs, masks, 0.30) == pytest.approx(np.ones(4))
    assert trust.dice_at(probs, masks, 0.5) == pytest.approx(np.zeros(4))  # 0.5 misses all


def test_the_chosen_threshold_maximises_mean_dice_over_the_grid_on_noisy_masks():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 24, 24)) < 0.3
    probs = np.clip(0.2 * masks + rng.normal(0.3, 0.1, masks.shape), 0, 1).astype(np.float32)
    chosen = trust.choose_threshold(probs, masks)
    means = [trust.dice_at(probs, masks, t).mean() for t in trust.GRID]
    assert trust.dice_at(probs, masks, chosen).mean() == pytest.approx(max(means))
    assert 0.3 < chosen < 0.5  # between the two classes' means, below 0.5


def test_a_sure_model_keeps_one_half():
    masks = np.zeros((2, 8, 8), bool)
    masks[:, 2:5, 2:5] = True
    assert trust.choose_threshold(masks.astype(np.float32), masks) == 0.5


def test_dice_of_two_empty_masks_is_one():
    assert trust.dice_at(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), 0.5).tolist() == [1.0]


@pytest.mark.parametrize("text", ["sensitivity=0.9", "youden", "threshold=1.5", "dice=0.3"])
def test_operating_points_segmentation_cannot_use_are_one_line_errors(text):
    with pytest.raises(ConfigError) as err:
        trust.MaskSettings.from_config({"operating_point": text})
    assert "\n" not in str(err.value) and text.split("=")[0] in str(err.value)


def test_a_given_threshold_is_used_and_reported_with_dice_and_hd95_intervals():
    probs, masks = _known_case()
    spacings = np.tile([0.5, 0.25], (4, 1))
    settings = trust.MaskSettings.from_config({"operating_point": "threshold=0.2"})
    cut, report = trust.fit_mask_outputs(settings, probs, masks, ["a", "a", "b", "c"], spacings)
    assert cut == 0.2
    point = report["operating_point"]
    assert point["rule"] == "threshold=0.2" and point["threshold"] == 0.2
    assert point["dice"] == pytest.approx(trust.dice_at(probs, masks, 0.2).mean())
    metrics = report["intervals"]["metrics"]
    assert set(metrics) == {"dice", "hausdorff95_mm"}
    for m in metrics.values():
        assert m["lower"] <= m["value"] <= m["upper"]
    assert "note" not in report["intervals"]  # every image had a spacing


def test_default_rule_chooses_on_eval():
    probs, masks = _known_case()
    cut, report = trust.fit_mask_outputs(
        trust.MaskSettings(bootstrap=0), probs, masks, list("abcd")
    )
    assert cut == pytest.approx(0.30) and report["operating_point"]["rule"] == "dice"
    assert report["operating_point"]["dice"] == 1.0 and "intervals" not in report


def test_the_exported_head_cuts_at_the_threshold_and_serves_it():
    import tensorflow as tf

    from medflow.components.tasks.segmentation.export import segmentation_head

    probs = tf.constant([[[0.2, 0.35], [0.5, 0.9]]], tf.float32)
    out = segmentation_head(0.3)(probs)
    assert out["mask"].numpy().tolist() == [[[0, 1], [1, 1]]]
    assert out["threshold"].numpy() == pytest.approx([0.3])


def test_the_task_refuses_a_classifier_rule_and_calibration_before_training():
    from medflow.components.tasks.segmentation import TASK

    with pytest.raises(ConfigError, match="segmentation takes dice"):
        TASK.check_hyperparameters({"operating_point": "youden"}, 32, ["bg", "fg"])
    with pytest.raises(ConfigError, match="does not calibrate"):
        TASK.check_hyperparameters({"calibration": "temperature"}, 32, ["bg", "fg"])
    TASK.check_hyperparameters({"operating_point": "threshold=0.4"}, 32, ["bg", "fg"])


def test_run_summary_and_models_page_lines_show_the_mask_threshold_and_intervals():
    from medflow.core.trust import trust_lines

    probs, masks = _known_case()
    _, report = trust.fit_mask_outputs(
        trust.MaskSettings(bootstrap=200), probs, masks, list("abcd")
    )
    lines = trust_lines(None, report["operating_point"], report["intervals"])
    assert lines[0] == "operating point dice: cut-off 0.3000 (on eval: dice 1.000)"
    assert "PPV" not in lines[1] and lines[1].startswith("95% intervals (patient-level")
    assert lines[2].startswith("  dice 1.000 [1.000, 1.000]")
    assert lines[3].startswith("  hausdorff95_mm 0.000")


def _detections(rng, n: int, p: float = 0.8):
    """``n`` 10x10 masks whose 100 pixels are each found with probability ``p`` (no false
    positives): per-image Dice 2k / (k + 100), k ~ Binomial(100, p)."""
    masks = np.ones((n, 10, 10), bool)
    probs = (rng.random((n, 10, 10)) < p).astype(np.float32)
    return probs, masks


def _true_mean_dice(p: float = 0.8) -> float:
    from scipy.stats import binom

    k = np.arange(101)
    return float(np.sum(binom.pmf(k, 100, p) * 2 * k / (k + 100)))


def _dice_interval(probs, masks) -> dict:
    settings = trust.MaskSettings.from_config(
        {"operating_point": "threshold=0.5", "bootstrap": 300}
    )
    _, report = trust.fit_mask_outputs(settings, probs, masks, np.arange(len(masks)))
    return report["intervals"]["metrics"]["dice"]


def test_dice_interval_shrinks_as_the_sample_grows():
    rng = np.random.default_rng(0)
    widths = []
    for n in (12, 48, 192):
        out = _dice_interval(*_detections(rng, n))
        widths.append(out["upper"] - out["lower"])
    assert widths[0] > 1.6 * widths[1] > 1.6**2 * widths[2]


def test_dice_interval_covers_the_true_mean_dice_in_a_simulation():
    truth = _true_mean_dice()
    rng = np.random.default_rng(11)
    runs = 40
    covered = sum(
        out["lower"] <= truth <= out["upper"]
        for out in (_dice_interval(*_detections(rng, 30)) for _ in range(runs))
    )
    # 95% nominal; 40 runs: below 0.85 would be a real fault (binomial p < 0.02)
    assert covered / runs >= 0.85
