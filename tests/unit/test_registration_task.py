"""The registration task plug-in: registration, thresholds and hyperparameters, training
on tiny synthetic pairs (a known shift is learnt), the SavedModel export and its two
signatures (with the affine stage), and the TFMA metric on the exported outputs (issue
18)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from medflow.components.ingest.examples import serialize_example  # noqa: E402
from medflow.components.tasks.registration.trainer import (  # noqa: E402
    Pairs,
    RegHParams,
    fit_arrays,
    pair_metrics,
    register_arrays,
)
from medflow.core.errors import ConfigError  # noqa: E402
from medflow.core.tasks import get_task  # noqa: E402

SIZE = 32


def _blob_pairs(n: int, shift: int = 3, seed: int = 0) -> tuple[Pairs, np.ndarray]:
    """Smooth blobs (fixed) and the same blobs shifted right by ``shift`` pixels (moving),
    with their masks; also the raw (un-normalised) images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    fixed, moving = [], []
    for _ in range(n):
        cy, cx, r = rng.uniform(11, 21), rng.uniform(9, 19), rng.uniform(5, 8)
        for out, dx in ((fixed, 0), (moving, shift)):
            out.append(np.exp(-((yy - cy) ** 2 + (xx - cx - dx) ** 2) / (2 * r * r)))

    def scaled(images):  # each image over [0, 1], as the Transform scales them
        a = np.asarray(images, np.float32)[..., None]
        lo, hi = a.min(axis=(1, 2, 3), keepdims=True), a.max(axis=(1, 2, 3), keepdims=True)
        return (a - lo) / (hi - lo)

    fixed, moving = scaled(fixed), scaled(moving)
    masks = [(a > 0.5).astype(np.float32) for a in (fixed, moving)]
    return Pairs(fixed, moving, masks[0], masks[1], np.ones(n, np.float32)), fixed


def test_the_task_is_registered_with_its_thresholds_and_hyperparameters():
    task = get_task("registration")
    assert task.manifest_columns == ("fixed", "moving")
    assert task.thresholds({"min_dice": "0.9"}).min_dice == 0.9
    with pytest.raises(ConfigError, match="takes min_dice, max_dice_drop and max_folding"):
        task.thresholds({"min_auc": 0.9})
    with pytest.raises(ConfigError, match="max_folding=2.0"):
        task.thresholds({"max_folding": 2})
    task.check_hyperparameters({"width": 8}, 64, [])
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth=8"):
        task.check_hyperparameters({}, 60, [])
    with pytest.raises(ValueError, match="similarity='ssd'"):
        task.check_hyperparameters({"similarity": "ssd"}, 64, [])
    assert task.check_serving_outputs({"warped": {}}, (8, 8), []).startswith("serving_default")
    ok = {k: {"shape": [-1, 8, 8]} for k in ("warped", "folding_fraction", "ncc")}
    ok["displacement"] = {"shape": [-1, 8, 8, 2]}
    assert task.check_serving_outputs(ok, (8, 8), []) is None


def test_eval_config_blesses_on_dice_after_and_a_folding_ceiling():
    pytest.importorskip("tensorflow_model_analysis")
    config = get_task("registration").eval_config(get_task("registration").thresholds(None), [])
    metrics = config.metrics_specs[0].metrics
    thresholded = {m.config: m.threshold for m in metrics if m.HasField("threshold")}
    assert len(thresholded) == 2
    assert config.model_specs[0].label_key == "fixed_mask"


@pytest.fixture(scope="module")
def trained():
    train, _ = _blob_pairs(24)
    hp = RegHParams.from_config(
        {
            "image_size": SIZE,
            "width": 8,
            "depth": 2,
            "epochs": 40,
            "integration_steps": 4,
            "learning_rate": 0.01,
            "batch_size": 8,
            "augment": False,
            "smoothness": 0.1,
            "affine": True,  # the affine stage, then the deformable one (the whole model)
        }
    )
    model, history = fit_arrays(hp, train)
    return hp, model, history


def test_training_learns_a_known_shift(trained):
    hp, model, history = trained
    assert history["loss"][-1] < history["loss"][0]
    held_out, _ = _blob_pairs(8, seed=7)
    metrics = pair_metrics(held_out, register_arrays(model, held_out))
    assert metrics["dice_after"] > metrics["dice_before"] + 0.1, metrics
    assert "hd95_after_mm" not in metrics  # the pixel spacing is unknown here
    assert metrics["ncc_after"] > metrics["ncc_before"]
    assert metrics["folding_fraction"] < 0.005


@pytest.mark.slow  # ~20 s of graph tracing for one step; the default tier keeps ~60 s in all
def test_a_diverging_training_stops_with_a_clear_error():
    pairs, _ = _blob_pairs(4)
    pairs.moving[0, 3, 3, 0] = np.nan  # a non-finite pixel makes the loss NaN
    hp = RegHParams.from_config({"image_size": SIZE, "width": 4, "depth": 2, "epochs": 2})
    with pytest.raises(ValueError, match="training diverged: loss nan at epoch 1"):
        fit_arrays(hp, pairs)


def _pair_example(fixed: np.ndarray, moving: np.ndarray, fixed_mask, moving_mask) -> bytes:
    return serialize_example(
        {
            "fixed": np.ascontiguousarray(fixed, "<f4").tobytes(),
            "moving": np.ascontiguousarray(moving, "<f4").tobytes(),
            "fixed_mask": fixed_mask.astype(np.uint8).tobytes(),
            "moving_mask": moving_mask.astype(np.uint8).tobytes(),
            "has_masks": 1,
            "modality": "US",
        }
    )


def test_export_serves_both_signatures_like_the_model_in_process(trained, tmp_path):
    from medflow.components.tasks.registration import tfma_metrics
    from medflow.components.tasks.registration.export import export_registration_model

    hp, model, _ = trained
    pairs, raw = _blob_pairs(3, seed=11)
    raw_moving = pairs.moving * 300.0 + 20.0  # pixels as ingested: any scale
    export_registration_model(model, str(tmp_path / "m"), hp.image_size, {"task": "x"})
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    out = loaded.signatures["serving_default"](
        image=tf.constant(raw * 50.0), moving=tf.constant(raw_moving)
    )
    assert tuple(out["warped"].shape) == (3, SIZE, SIZE)
    assert tuple(out["displacement"].shape) == (3, SIZE, SIZE, 2)
    expected = register_arrays(model, pairs)
    np.testing.assert_allclose(out["displacement"].numpy(), expected["flow"], atol=1e-4)
    np.testing.assert_allclose(  # the moving image's own pixels, warped
        out["warped"].numpy(), expected["warped"][..., 0] * 300.0 + 20.0, rtol=1e-3, atol=1e-2
    )
    records = [
        _pair_example(raw[i], raw_moving[i], pairs.fixed_mask[i], pairs.moving_mask[i])
        for i in range(3)
    ]
    ex = loaded.signatures["serve_examples"](examples=tf.constant(records))
    np.testing.assert_allclose(ex["displacement"].numpy(), expected["flow"], atol=1e-4)
    np.testing.assert_allclose(
        ex["warped_mask"].numpy(), expected["warped_mask"][..., 0], atol=1e-4
    )
    # the TFMA combiner on those outputs gives pair_metrics' Dice
    combiner = tfma_metrics._RegistrationCombiner(_keys(), "")
    acc = combiner.create_accumulator()
    for i in range(3):
        element = _Element(
            {k: v.numpy()[i] for k, v in ex.items()},
            np.array([pairs.fixed_mask[i].astype(np.uint8).tobytes()], dtype=object),
            {"has_masks": np.array([1]), "pixel_spacing": np.array([0.5, 0.25])},
        )
        acc = combiner.add_input(acc, element)
    result = {k.name: v for k, v in combiner.extract_output(acc).items()}
    pairs.spacing = np.tile([0.5, 0.25], (3, 1))
    reference = pair_metrics(pairs, expected)
    for name in ("hd95_before_mm", "hd95_after_mm"):  # in mm of the examples' pixel spacing
        assert result[name] == pytest.approx(reference[name], abs=1e-6)
    assert result["hd95_before_mm"] > 0
    assert result["dice_after"] == pytest.approx(reference["dice_after"], abs=1e-6)
    assert result["dice_before"] == pytest.approx(reference["dice_before"], abs=1e-6)
    assert result["folding_fraction"] == pytest.approx(reference["folding_fraction"], abs=1e-6)


class _Element:
    def __init__(self, prediction, label, features):
        self.prediction, self.label, self.features = prediction, label, features


def _keys():
    from tensorflow_model_analysis.metrics import metric_types

    return [
        metric_types.MetricKey(name=n)
        for n in (
            "dice_before",
            "dice_after",
            "hd95_before_mm",
            "hd95_after_mm",
            "folding_fraction",
            "ncc",
        )  # fmt: skip
    ]


@pytest.mark.slow  # ~50 s of training on 2 loaded cores
def test_an_affine_stage_learns_the_shift():
    train, _ = _blob_pairs(16, shift=4)
    hp = RegHParams.from_config(
        {
            "image_size": SIZE, "width": 4, "depth": 2, "epochs": 25, "integration_steps": 0,
            "learning_rate": 0.01, "augment": False, "affine": True, "smoothness": 1.0,
        }
    )  # fmt: skip
    model, _ = fit_arrays(hp, train)
    held_out, _ = _blob_pairs(4, shift=4, seed=3)
    affine = model.get_layer("affine")([held_out.fixed, held_out.moving]).numpy()
    # moving = fixed 4 columns to the right: the affine field samples ~4 columns right
    assert 2.0 < float(np.median(affine[..., 1])) < 6.0, np.median(affine[..., 1])
    assert abs(float(np.median(affine[..., 0]))) < 1.5
    metrics = pair_metrics(held_out, register_arrays(model, held_out))
    assert metrics["dice_after"] > metrics["dice_before"] + 0.1, metrics


def test_the_affine_stage_moves_the_field_and_the_augmentation_warps():
    from medflow.components.tasks.registration.model import build_registration_model
    from medflow.components.tasks.registration.trainer import _random_affine

    model = build_registration_model((SIZE, SIZE), width=4, depth=2, affine=True)
    bias = np.zeros(6, np.float32)
    bias[2], bias[5] = 2 / (SIZE - 1), -6 / (SIZE - 1)  # one row down, three columns left
    theta = model.get_layer("affine").get_layer("theta")
    theta.set_weights([theta.get_weights()[0], bias])
    pairs, _ = _blob_pairs(2)
    field = register_arrays(model, pairs)["flow"]
    np.testing.assert_allclose(np.median(field, axis=(0, 1, 2)), [1.0, -3.0], atol=0.05)
    # the training augmentation: a random affine of the moving image and its mask alike
    moving, mask = _random_affine(
        tf.constant(pairs.moving), tf.constant(pairs.moving), tf.constant([1, 2]), 0.2
    )
    np.testing.assert_allclose(moving.numpy(), mask.numpy())
    assert 1e-3 < float(np.abs(moving.numpy() - pairs.moving).mean()) < 0.2
    with pytest.raises(ValueError, match="augment_affine=0.9"):
        RegHParams.from_config({"image_size": SIZE, "augment_affine": 0.9})
