"""Registration layers, one at a time: spatial transformer, scaling and squaring, Jacobian
and folding, losses, and the U-Net's shapes (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from medflow.components.tasks.registration import layers, losses  # noqa: E402
from medflow.components.tasks.registration.model import (  # noqa: E402
    build_registration_model,
    normalise,
)


def _image(rows=16, cols=20, seed=0):
    return np.random.default_rng(seed).random((1, rows, cols, 1)).astype(np.float32)


def _constant_field(rows, cols, dy, dx):
    flow = np.zeros((1, rows, cols, 2), np.float32)
    flow[..., 0], flow[..., 1] = dy, dx
    return flow


def test_identity_field_returns_the_input_exactly():
    image = _image()
    out = layers.warp(image, np.zeros((1, 16, 20, 2), np.float32)).numpy()
    np.testing.assert_array_equal(out, image)


def test_integer_shift_warps_exactly_and_clamps_at_the_border():
    image = _image()
    out = layers.warp(image, _constant_field(16, 20, -1, 2)).numpy()
    # warped[y, x] = moving[y - 1, x + 2]
    np.testing.assert_array_equal(out[0, 1:, :-2], image[0, :-1, 2:])
    np.testing.assert_array_equal(out[0, 0, :-2], image[0, 0, 2:])  # row -1 -> border row 0
    np.testing.assert_array_equal(out[0, 1:, -1], image[0, :-1, -1])  # col 21 -> border col


def test_half_pixel_shift_is_the_mean_of_neighbours():
    image = _image()
    out = layers.warp(image, _constant_field(16, 20, 0, 0.5)).numpy()
    np.testing.assert_allclose(out[0, :, :-1], (image[0, :, :-1] + image[0, :, 1:]) / 2, rtol=1e-6)


def test_warp_has_gradients_for_the_field():
    image = tf.constant(_image())
    flow = tf.Variable(_constant_field(16, 20, 0.3, 0.2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layers.warp(image, flow))
    grad = tape.gradient(loss, flow).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_scaling_and_squaring_of_a_constant_velocity_is_that_translation():
    velocity = _constant_field(16, 16, 1.5, -2.0)
    np.testing.assert_allclose(layers.integrate(velocity, 7).numpy(), velocity, atol=1e-5)
    np.testing.assert_array_equal(layers.integrate(np.zeros_like(velocity)).numpy(), 0.0)


def test_integrated_smooth_field_does_not_fold_where_the_raw_field_does():
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    bump = 6.0 * np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 20.0)
    velocity = np.stack([np.zeros_like(bump), bump], axis=-1)[None].astype(np.float32)
    assert layers.folding_fraction(velocity).numpy()[0] > 0.0
    assert layers.folding_fraction(layers.integrate(velocity, 7)).numpy()[0] == 0.0


def test_jacobian_determinant_matches_numpy_gradient():
    flow = np.random.default_rng(1).normal(0, 0.7, (1, 12, 14, 2)).astype(np.float32)
    dy_y, dx_y = np.gradient(flow[0, ..., 0])
    dy_x, dx_x = np.gradient(flow[0, ..., 1])
    expected = (1 + dy_y) * (1 + dx_x) - dx_y * dy_x
    np.testing.assert_allclose(layers.jacobian_determinant(flow).numpy()[0], expected, atol=1e-5)
    det = layers.jacobian_determinant(flow).numpy()
    assert layers.folding_fraction(flow).numpy()[0] == pytest.approx((det <= 0).mean())


def test_a_mirroring_field_folds_everywhere():
    xx = np.tile(np.arange(10, dtype=np.float32), (10, 1))
    flow = np.stack([np.zeros_like(xx), -2 * xx], axis=-1)[None]  # x -> -x
    assert layers.folding_fraction(flow).numpy()[0] == 1.0
    assert layers.folding_fraction(np.zeros_like(flow)).numpy()[0] == 0.0
    diverged = np.full_like(flow, np.nan)
    assert layers.folding_fraction(diverged).numpy()[0] == 1.0  # never reported as smooth


def test_losses():
    image = _image(24, 24)
    np.testing.assert_allclose(losses.local_ncc(image, image).numpy(), 1.0, atol=5e-3)
    np.testing.assert_allclose(losses.local_ncc(image, 3 * image + 2).numpy(), 1.0, atol=5e-3)
    assert losses.local_ncc(image, _image(24, 24, seed=5)).numpy()[0] < 0.3
    assert losses.mse(image, image + 0.5).numpy()[0] == pytest.approx(0.25)
    assert losses.smoothness(_constant_field(8, 8, 3, -1)).numpy()[0] == 0.0
    assert losses.smoothness(np.random.rand(1, 8, 8, 2).astype(np.float32)).numpy()[0] > 0
    with pytest.raises(ValueError, match="similarity 'ssd'"):
        losses.similarity_loss("ssd", image, image)
    mask = np.zeros((1, 8, 8, 1), np.float32)
    mask[0, 2:6, 2:6] = 1
    assert losses.soft_dice(mask, mask).numpy()[0] == pytest.approx(1.0)
    assert losses.dice(mask, np.zeros_like(mask)) == 0.0
    assert losses.dice(np.zeros(3), np.zeros(3)) == 1.0


def test_unet_predicts_a_field_on_the_input_grid_and_starts_near_identity():
    model = build_registration_model((32, 48), width=4, depth=2, integration_steps=3)
    fixed, moving = normalise(_image(32, 48)), normalise(_image(32, 48, seed=2))
    warped, flow = model([fixed, moving])
    assert tuple(warped.shape) == (1, 32, 48, 1) and tuple(flow.shape) == (1, 32, 48, 2)
    assert float(tf.reduce_max(tf.abs(flow))) < 1e-2
    np.testing.assert_allclose(warped.numpy(), moving.numpy(), atol=1e-2)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth=8"):
        build_registration_model((30, 48), width=4, depth=3)


def test_mask_scores_give_dice_and_hd95_in_mm_before_and_after():
    fixed = np.zeros((20, 20), bool)
    fixed[5:15, 5:15] = True
    moving = np.roll(fixed, 2, axis=1)  # 2 columns to the right
    warped = layers.warp(moving[None, ..., None].astype(np.float32), _constant_field(20, 20, 0, 2))
    scores = losses.mask_scores(fixed, moving, warped.numpy()[0, ..., 0], spacing=(0.5, 0.25))
    assert scores["dice_before"] == pytest.approx(0.8)
    assert scores["hd95_before_mm"] == pytest.approx(2 * 0.25)  # 2 columns of 0.25 mm
    assert scores["dice_after"] == 1.0 and scores["hd95_after_mm"] == 0.0


def _theta(*values):
    return np.asarray([values], np.float32)


def test_identity_affine_returns_the_input_exactly():
    image = _image()
    flow = layers.affine_flow(_theta(0, 0, 0, 0, 0, 0), 16, 20)
    np.testing.assert_array_equal(flow.numpy(), 0.0)
    np.testing.assert_array_equal(layers.warp(image, flow).numpy(), image)


def test_affine_translation_is_an_exact_pixel_shift():
    image = _image()
    # t = 2 / (rows - 1) per row in [-1, 1] coordinates: one row down, two columns left
    flow = layers.affine_flow(_theta(0, 0, 2 / 15, 0, 0, -4 / 19), 16, 20).numpy()
    np.testing.assert_allclose(flow, _constant_field(16, 20, 1, -2), atol=1e-5)
    out = layers.warp(image, flow).numpy()
    np.testing.assert_allclose(out[0, :-1, 2:], image[0, 1:, :-2], atol=1e-5)


def test_affine_scale_zooms_about_the_centre():
    rows, cols = 17, 21
    ramp = np.tile(np.arange(cols, dtype=np.float32), (rows, 1))[None, ..., None]
    # (I + M) q with M = diag(s - 1): position x -> centre + s (x - centre); bilinear
    # sampling of a linear ramp is exact
    s = 0.5
    out = layers.warp(ramp, layers.affine_flow(_theta(s - 1, 0, 0, 0, s - 1, 0), rows, cols))
    centre = (cols - 1) / 2
    np.testing.assert_allclose(out.numpy()[0, 8, :, 0], centre + s * (np.arange(cols) - centre))
    # a rotation by 90 degrees maps rows onto columns (square grid)
    square = _image(15, 15)
    rot = layers.warp(square, layers.affine_flow(_theta(-1, -1, 0, 1, -1, 0), 15, 15)).numpy()
    np.testing.assert_allclose(rot[0], np.rot90(square[0], k=-1), atol=1e-5)


def test_composition_of_two_shifts_is_their_sum():
    a, b = _constant_field(16, 20, 1, 0), _constant_field(16, 20, 0, -2)
    np.testing.assert_allclose(layers.compose(a, b).numpy(), a + b, atol=1e-6)
    image = _image()
    once = layers.warp(image, layers.compose(a, b)).numpy()
    twice = layers.warp(layers.warp(image, a), b).numpy()
    np.testing.assert_allclose(once[0, 2:-2, 2:-2], twice[0, 2:-2, 2:-2], atol=1e-5)


def test_model_with_an_affine_stage_starts_at_the_identity_and_names_its_stage():
    model = build_registration_model((32, 32), width=4, depth=2, affine=True)
    fixed, moving = normalise(_image(32, 32)), normalise(_image(32, 32, seed=2))
    warped, flow = model([fixed, moving])
    assert model.name.endswith("_affine")
    affine = model.get_layer("affine")([fixed, moving])
    np.testing.assert_array_equal(affine.numpy(), 0.0)  # zero-initialised head
    assert float(tf.reduce_max(tf.abs(flow))) < 1e-2
    np.testing.assert_allclose(warped.numpy(), moving.numpy(), atol=1e-2)


def test_trilinear_warp_identity_known_shift_and_half_voxel():
    volume = np.random.default_rng(3).random((1, 6, 7, 8, 1)).astype(np.float32)
    zero = np.zeros((1, 6, 7, 8, 3), np.float32)
    np.testing.assert_array_equal(layers.warp(volume, zero).numpy(), volume)
    shift = zero.copy()
    shift[..., 0], shift[..., 1], shift[..., 2] = 1, -2, 3  # slice, row, column
    out = layers.warp(volume, shift).numpy()
    # warped[z, y, x] = moving[z + 1, y - 2, x + 3]
    np.testing.assert_array_equal(out[0, :-1, 2:, :-3], volume[0, 1:, :-2, 3:])
    half = zero.copy()
    half[..., 0] = 0.5
    np.testing.assert_allclose(
        layers.warp(volume, half).numpy()[0, :-1], (volume[0, :-1] + volume[0, 1:]) / 2, rtol=1e-6
    )
