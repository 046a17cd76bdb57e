"""A small 3D U-Net (Keras 3) for volume segmentation, fully convolutional so one set of
weights runs on training patches and on the sliding windows of inference.

Each stage: two 3x3x3 convolutions with GroupNorm (batch statistics are poor with the
small 3D batches a CPU or one GPU holds) and ReLU; max-pooling down, transposed
convolution up, skip connections; a softmax over ``n_classes`` per voxel.
"""

from __future__ import annotations

import math


def build_unet3d(n_classes: int, depth: int = 3, width: int = 16, channels: int = 1):
    """Input [None, None, None, None, channels] (each side divisible by ``2**depth``) ->
    per-voxel class probabilities [..., n_classes]."""
    import keras
    from keras import layers

    def block(x, filters: int, name: str):
        for i in (1, 2):
            x = layers.Conv3D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            x = layers.GroupNormalization(math.gcd(8, filters), name=f"{name}_gn{i}")(x)
            x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        return x

    inputs = keras.Input((None, None, None, channels), name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = block(x, width * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling3D(2, name=f"pool{level}")(x)
    x = block(x, width * 2**depth, "bottom")
    for level in reversed(range(depth)):
        x = layers.Conv3DTranspose(width * 2**level, 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = block(x, width * 2**level, f"dec{level}")
    logits = layers.Conv3D(n_classes, 1, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=f"unet3d_d{depth}_w{width}")


def dice_ce_loss_3d(y_true, y_pred):
    """Cross-entropy + soft Dice averaged over the foreground classes; ``y_true`` holds
    class indices [b, d, h, w], ``y_pred`` probabilities [b, d, h, w, n_classes]."""
    from keras import ops

    n = ops.shape(y_pred)[-1]
    onehot = ops.one_hot(ops.cast(y_true, "int32"), n)
    ce = ops.mean(ops.sum(-onehot * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1))
    axes = (0, 1, 2, 3)
    inter = ops.sum(onehot * y_pred, axis=axes)
    total = ops.sum(onehot, axis=axes) + ops.sum(y_pred, axis=axes)
    soft_dice = (2.0 * inter + 1.0) / (total + 1.0)
    return ce + 1.0 - ops.mean(soft_dice[1:])


def foreground_dice(y_true, y_pred):
    """Mean hard Dice over the foreground classes of a batch (a Keras metric)."""
    from keras import ops

    n = ops.shape(y_pred)[-1]
    pred = ops.one_hot(ops.argmax(y_pred, axis=-1), n)
    true = ops.one_hot(ops.cast(y_true, "int32"), n)
    axes = (0, 1, 2, 3)
    inter = ops.sum(pred * true, axis=axes)
    total = ops.sum(pred, axis=axes) + ops.sum(true, axis=axes)
    return ops.mean(((2.0 * inter + 1e-6) / (total + 1e-6))[1:])
