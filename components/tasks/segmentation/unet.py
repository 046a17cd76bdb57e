"""2D U-Net (Keras 3), its Dice + cross-entropy loss and paired image/mask augmentation.

The model maps a transformed image ``[batch, rows, cols, channels]`` to the foreground
probability ``[batch, rows, cols]`` (binary segmentation; sigmoid output in float32 also
under mixed precision).
"""

from __future__ import annotations

import math

SMOOTH = 1.0  # Laplace smoothing of the soft Dice: an empty mask predicted empty scores 1


def build_unet(input_shape: tuple[int, int, int], depth: int = 4, width: int = 16):
    """U-Net with ``depth`` poolings; stage ``k`` has ``width * 2**k`` channels.

    Raises:
        ValueError: rows or cols not divisible by ``2**depth``.
    """
    import keras
    from keras import layers

    rows, cols, _ = input_shape
    if depth < 1 or width < 1 or rows % 2**depth or cols % 2**depth:
        raise ValueError(
            f"U-Net depth={depth} width={width} on {rows}x{cols}: need depth, width >= 1 and "
            f"rows, cols divisible by 2**depth={2**depth}"
        )

    def block(x, filters: int, name: str):
        for i in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        return x

    inputs = keras.Input(input_shape, name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = block(x, width * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"pool{level}")(x)
    x = block(x, width * 2**depth, "bottom")
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(width * 2**level, 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = block(x, width * 2**level, f"dec{level}")
    logits = layers.Conv2D(1, 1, dtype="float32", name="logits")(x)
    probabilities = layers.Activation("sigmoid", dtype="float32", name="sigmoid")(
        layers.Reshape((rows, cols), dtype="float32", name="squeeze")(logits)
    )
    return keras.Model(inputs, probabilities, name=f"unet_d{depth}_w{width}")


def soft_dice(y_true, y_pred):
    """Per-image soft Dice ``[batch]`` of probabilities against a 0/1 mask."""
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    axes = tuple(range(1, len(y_pred.shape)))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * intersection + SMOOTH) / (total + SMOOTH)


def dice_ce_loss(y_true, y_pred):
    """``1 - soft Dice + binary cross-entropy`` per image (Keras averages over the batch)."""
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    y_pred = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
    ce = -(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))
    return 1.0 - soft_dice(y_true, y_pred) + ops.mean(ce, axis=tuple(range(1, len(ce.shape))))


def hard_dice(y_true, y_pred):
    """Dice of the 0.5-thresholded prediction per image (Keras metric function)."""
    from keras import ops

    return soft_dice(y_true, ops.cast(y_pred >= 0.5, "float32"))


def augment(image, mask, seed: int = 0, max_rotation_deg: float = 15.0, max_shift: float = 0.08):
    """Random flips, a small affine (rotation, scale 0.9-1.1, shift) and intensity change.

    The same geometric transform moves ``image`` [rows, cols, ch] (bilinear, filled with
    its minimum) and ``mask`` [rows, cols] (nearest, filled with background).
    """
    import tensorflow as tf

    rows, cols = image.shape[0], image.shape[1]
    mask3 = tf.cast(mask[..., None], tf.float32)
    flip = tf.random.uniform([2], seed=seed) < 0.5
    image = tf.cond(flip[0], lambda: tf.reverse(image, [1]), lambda: image)
    mask3 = tf.cond(flip[0], lambda: tf.reverse(mask3, [1]), lambda: mask3)
    image = tf.cond(flip[1], lambda: tf.reverse(image, [0]), lambda: image)
    mask3 = tf.cond(flip[1], lambda: tf.reverse(mask3, [0]), lambda: mask3)
    u = tf.random.uniform([6], -1.0, 1.0, seed=seed + 1)
    angle = u[0] * max_rotation_deg * math.pi / 180.0
    scale = 1.0 + 0.1 * u[1]
    tx, ty = u[2] * max_shift * cols, u[3] * max_shift * rows
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    cx, cy = (cols - 1) / 2.0, (rows - 1) / 2.0
    # Output pixel (x, y) samples the input at M (x - c - t) + c (inverse rotation/scale).
    transform = tf.stack(
        [
            cos,
            sin,
            cx - cos * (cx + tx) - sin * (cy + ty),
            -sin,
            cos,
            cy + sin * (cx + tx) - cos * (cy + ty),
            0.0,
            0.0,
        ]
    )[None]

    def warp(x, interpolation: str, fill):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x[None],
            transforms=transform,
            output_shape=[rows, cols],
            fill_value=fill,
            interpolation=interpolation,
            fill_mode="CONSTANT",
        )[0]

    image = warp(image, "BILINEAR", tf.reduce_min(image))
    mask3 = warp(mask3, "NEAREST", 0.0)
    contrast, brightness = 1.0 + 0.15 * u[4], 0.15 * u[5]
    image = image * contrast + brightness
    image = image + tf.random.normal(tf.shape(image), stddev=0.03, seed=seed + 2)
    return image, tf.cast(mask3[..., 0], mask.dtype)
