"""A small 3D CNN (Keras 3) for volume classification: stages of two 3x3x3 convolutions
(GroupNorm, ReLU) and max-pooling, global average pooling, dropout, a softmax head."""

from __future__ import annotations

import math


def build_cnn3d(
    input_shape, n_classes: int = 2, width: int = 16, stages: int = 3, dropout: float = 0.3
):
    """``input_shape`` (d, h, w, ch) -> class probabilities [n_classes]."""
    import keras
    from keras import layers

    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for s in range(stages):
        filters = width * 2**s
        for i in (1, 2):
            x = layers.Conv3D(filters, 3, padding="same", use_bias=False, name=f"s{s}_conv{i}")(x)
            x = layers.GroupNormalization(math.gcd(8, filters), name=f"s{s}_gn{i}")(x)
            x = layers.Activation("relu", name=f"s{s}_relu{i}")(x)
        if s < stages - 1:
            x = layers.MaxPooling3D(2, name=f"s{s}_pool")(x)
    x = layers.GlobalAveragePooling3D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(
        x
    )
    return keras.Model(inputs, outputs, name=f"cnn3d_w{width}_s{stages}")
