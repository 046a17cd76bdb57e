"""Keras 3 classification networks: a small CNN, a ResNet-18 and keras.applications.

Inputs are the Transform's output (z-scored float32 ``[batch, rows, cols, channels]``);
outputs are softmax probabilities (float32 even under mixed precision).
"""

from __future__ import annotations

import os

from medflow.components.models.hparams import APPLICATIONS, HParams


def _augmenter(hp: HParams):
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=hp.seed),
            keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=hp.seed),
            keras.layers.RandomRotation(0.04, fill_mode="constant", seed=hp.seed),
        ],
        name="augment",
    )


def _conv_bn(x, filters: int, stride: int = 1, kernel: int = 3):
    import keras

    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation("relu")(x)


def small_cnn(x, width: int):
    """Three VGG-style stages (two 3x3 convs + pooling) for 28-64 px images."""
    import keras

    for stage in range(3):
        x = _conv_bn(x, width * 2**stage)
        x = _conv_bn(x, width * 2**stage)
        x = keras.layers.MaxPooling2D()(x)
    return keras.layers.GlobalAveragePooling2D()(x)


def _basic_block(x, filters: int, stride: int):
    import keras

    shortcut = x
    y = _conv_bn(x, filters, stride)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    return keras.layers.Activation("relu")(keras.layers.Add()([y, shortcut]))


def resnet18(x, width: int, small_input: bool):
    """ResNet-18 (He et al. 2016); a 3x3 stride-1 stem for small inputs (as MedMNIST)."""
    import keras

    if small_input:
        x = _conv_bn(x, width)
    else:
        x = _conv_bn(x, width, stride=2, kernel=7)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage in range(4):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, width * 2**stage, stride)
    return keras.layers.GlobalAveragePooling2D()(x)


def application(x, hp: HParams):
    """A keras.applications backbone, ``include_top=False``, weights from a local file."""
    import keras

    name = hp.resolved_backbone()
    if hp.pretrained_weights and not os.path.isfile(hp.pretrained_weights):
        raise FileNotFoundError(
            f"pretrained_weights={hp.pretrained_weights!r} does not exist; give a local "
            f"{APPLICATIONS[name]} notop .h5/.weights.h5 file (nothing is downloaded)"
        )
    if hp.channels == 1:
        x = keras.layers.Concatenate()([x, x, x])
    builder = getattr(keras.applications, APPLICATIONS[name])
    base = builder(
        include_top=False,
        weights=hp.pretrained_weights or None,
        input_shape=(*hp.image_size, 3),
        pooling="avg",
    )
    return base(x)


def build_model(hp: HParams):
    """Uncompiled Keras 3 model: ``image`` -> class probabilities ``[batch, n_classes]``."""
    import keras

    inputs = keras.Input(shape=hp.input_shape, name="image", dtype="float32")
    x = _augmenter(hp)(inputs) if hp.augment else inputs
    name = hp.resolved_backbone()
    if name == "small_cnn":
        x = small_cnn(x, hp.width)
    elif name == "resnet18":
        x = resnet18(x, hp.width, small_input=max(hp.image_size) <= 64)
    else:
        x = application(x, hp)
    x = keras.layers.Dropout(hp.dropout, seed=hp.seed)(x)
    outputs = keras.layers.Dense(hp.n_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"medflow_{name}")
