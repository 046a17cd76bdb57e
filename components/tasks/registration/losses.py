"""Registration losses (TensorFlow ops) and the evaluation measures (NumPy).

Training minimises ``similarity + smoothness_weight * smoothness (+ dice_weight * (1 - soft
Dice))``: similarity is local normalised cross-correlation (``ncc``) or ``mse`` of the
fixed and warped images; smoothness the mean squared gradient of the displacement; the soft
Dice of the warped moving mask against the fixed mask when masks are given.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from medflow.components.tasks.registration.evaluation import (
    DICE_AFTER,
    DICE_BEFORE,
    HD95_AFTER,
    HD95_BEFORE,
)
from medflow.components.tasks.segmentation.metrics import dice, hausdorff95_mm

NCC_WINDOW = 9
SIMILARITIES = ("ncc", "mse")


def local_ncc(fixed: tf.Tensor, warped: tf.Tensor, window: int = NCC_WINDOW) -> tf.Tensor:
    """Mean squared local normalised cross-correlation per image [batch] (1: identical up
    to a local affine intensity change; 0: unrelated), over ``window`` x ``window`` patches."""
    i, j = tf.cast(fixed, tf.float32), tf.cast(warped, tf.float32)

    def mean(x):
        return tf.nn.avg_pool2d(x, window, 1, "SAME")

    mi, mj = mean(i), mean(j)
    cross = mean(i * j) - mi * mj
    var_i = tf.nn.relu(mean(i * i) - mi * mi)
    var_j = tf.nn.relu(mean(j * j) - mj * mj)
    cc = cross * cross / (var_i * var_j + 1e-5)
    return tf.reduce_mean(cc, axis=[1, 2, 3])


def mse(fixed: tf.Tensor, warped: tf.Tensor) -> tf.Tensor:
    """Mean squared intensity difference per image [batch]."""
    diff = tf.cast(fixed, tf.float32) - tf.cast(warped, tf.float32)
    return tf.reduce_mean(diff * diff, axis=[1, 2, 3])


def similarity_loss(kind: str, fixed: tf.Tensor, warped: tf.Tensor) -> tf.Tensor:
    """Per-image loss [batch]: ``-local_ncc`` or ``mse``."""
    if kind == "ncc":
        return -local_ncc(fixed, warped)
    if kind == "mse":
        return mse(fixed, warped)
    raise ValueError(f"similarity {kind!r}: choose one of {', '.join(SIMILARITIES)}")


def smoothness(flow: tf.Tensor) -> tf.Tensor:
    """Mean squared forward difference of the displacement per image [batch]."""
    dy = flow[:, 1:, :, :] - flow[:, :-1, :, :]
    dx = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    return tf.reduce_mean(dy * dy, axis=[1, 2, 3]) + tf.reduce_mean(dx * dx, axis=[1, 2, 3])


def soft_dice(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Soft Dice per image [batch] of two masks with values in [0, 1] (1 when both empty)."""
    a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
    axes = list(range(1, len(a.shape)))
    inter = tf.reduce_sum(a * b, axis=axes)
    total = tf.reduce_sum(a, axis=axes) + tf.reduce_sum(b, axis=axes)
    return (2.0 * inter + 1.0) / (total + 1.0)


def mask_scores(fixed_mask, moving_mask, warped_mask, spacing=(1.0, 1.0)) -> dict[str, float]:
    """Dice and HD95 (mm, ``spacing`` (row_mm, col_mm) of a model-grid pixel) of the moving
    mask (before) and of the warped moving mask (after, >= 0.5) against the fixed mask."""
    fixed = np.asarray(fixed_mask) > 0
    moving = np.asarray(moving_mask) >= 0.5
    warped = np.asarray(warped_mask) >= 0.5
    return {
        DICE_BEFORE: dice(moving, fixed),
        DICE_AFTER: dice(warped, fixed),
        HD95_BEFORE: hausdorff95_mm(moving, fixed, spacing),
        HD95_AFTER: hausdorff95_mm(warped, fixed, spacing),
    }
