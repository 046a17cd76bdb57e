"""Registration losses (TensorFlow ops) and the evaluation measures (NumPy).

Training minimises ``similarity + smoothness_weight * smoothness (+ dice_weight * (1 - soft
Dice))``: similarity is local normalised cross-correlation (``ncc``) or ``mse`` of the
fixed and warped images; smoothness the mean squared gradient of the displacement; the soft
Dice of the warped moving mask against the fixed mask when masks are given.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

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


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total
