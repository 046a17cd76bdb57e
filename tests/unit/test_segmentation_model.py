"""U-Net builder, Dice + cross-entropy loss, paired augmentation and segmentation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medflow.components.tasks.segmentation.metrics import (
    dice,
    ellipse_circumference_mm,
    hausdorff95_mm,
    iou,
)


def _disc(shape=(64, 64), center=(32, 32), radius=12.0) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return ((rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius**2).astype(np.uint8)


def test_unet_maps_images_to_per_pixel_probabilities():
    from medflow.components.tasks.segmentation.unet import build_unet

    model = build_unet((32, 48, 1), depth=3, width=4)
    out = model(np.random.default_rng(0).normal(size=(2, 32, 48, 1)).astype("float32"))
    out = np.asarray(out)
    assert out.shape == (2, 32, 48) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth=16"):
        build_unet((40, 40, 1), depth=4, width=4)


def test_loss_and_dice_of_perfect_and_wrong_predictions():
    from medflow.components.tasks.segmentation.unet import dice_ce_loss, hard_dice, soft_dice

    true = _disc()[None].astype("float32")
    assert float(soft_dice(true, true)[0]) == pytest.approx(1.0)
    assert float(hard_dice(true, true)[0]) == pytest.approx(1.0)
    assert float(dice_ce_loss(true, true)[0]) == pytest.approx(0.0, abs=1e-4)
    inverted = 1.0 - true
    assert float(hard_dice(true, inverted)[0]) == pytest.approx(0.0, abs=1e-3)
    half = np.full_like(true, 0.5)
    assert float(dice_ce_loss(true, inverted)[0]) > float(dice_ce_loss(true, half)[0]) > 0.5
    empty = np.zeros_like(true)
    assert float(soft_dice(empty, empty)[0]) == pytest.approx(1.0)  # nothing to find, none found


def test_augmentation_moves_mask_with_image():
    import tensorflow as tf

    from medflow.components.tasks.segmentation.unet import augment

    mask = _disc(center=(20, 40), radius=10)
    image = np.where(mask[..., None] > 0, 3.0, -1.0).astype("float32")
    moved = 0
    for seed in range(6):
        tf.random.set_seed(seed)
        img, m = augment(tf.constant(image), tf.constant(mask.astype("float32")), seed)
        img, m = img.numpy(), m.numpy()
        assert set(np.unique(m)) <= {0.0, 1.0}
        inside = img[..., 0][m > 0]
        # Brightness/contrast/noise change values, not where the bright disc is (edge
        # pixels blend: bilinear image, nearest mask).
        assert (inside > 1.0).mean() > 0.9 and np.median(img[..., 0][m == 0]) < 0.5
        moved += dice(m, mask) < 0.95
    assert moved >= 3  # the transform is random, not the identity


def test_dice_iou_hausdorff_on_known_shapes():
    a = _disc(radius=12)
    b = _disc(center=(32, 36), radius=12)  # shifted 4 px along columns
    assert dice(a, a) == iou(a, a) == 1.0
    assert 0.7 < dice(a, b) < 0.9 and iou(a, b) < dice(a, b)
    assert hausdorff95_mm(a, a) == 0.0
    assert hausdorff95_mm(a, b, (0.5, 0.5)) == pytest.approx(2.0, abs=0.3)  # 4 px * 0.5 mm
    assert hausdorff95_mm(a, b, (1.0, 0.25)) == pytest.approx(1.0, abs=0.3)  # shift on cols
    empty = np.zeros_like(a)
    assert hausdorff95_mm(empty, a) == pytest.approx(math.hypot(64, 64))
    assert dice(empty, empty) == 1.0


def test_ellipse_circumference_of_a_drawn_ellipse():
    rr, cc = np.mgrid[:200, :300]
    a, b = 100.0, 60.0  # semi-axes in px along cols and rows
    mask = ((cc - 150) / a) ** 2 + ((rr - 100) / b) ** 2 <= 1
    expected = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    assert ellipse_circumference_mm(mask) == pytest.approx(expected, rel=0.01)
    assert ellipse_circumference_mm(mask, (0.1, 0.1)) == pytest.approx(expected / 10, rel=0.01)
    assert ellipse_circumference_mm(np.zeros((5, 5))) == 0.0
