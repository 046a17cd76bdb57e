"""The registration network (Keras 3): a small U-Net on the stacked (fixed, moving) pair
predicting a dense displacement field, optionally integrated by scaling and squaring
(diffeomorphic), and the spatial transformer that warps the moving image with it.

``build_registration_model`` returns a model ``[fixed, moving] -> [warped, flow]`` with
fixed and moving float32 ``[batch, rows, cols, 1]`` (normalised, :func:`normalise`).
With ``affine=True`` a small CNN (:func:`build_affine_net`, the sub-model named
``affine``) first regresses an affine transform of the pair; the U-Net then registers the
affinely warped moving image, and ``flow`` is the composition of both fields (one
resampling of the moving image).
"""

from __future__ import annotations

import tensorflow as tf

from medflow.components.tasks.registration.layers import (
    AffineFlow,
    Compose,
    SpatialTransformer,
    VecInt,
)

AFFINE_NET = "affine"  # the affine stage's sub-model (layer name), when the model has one


def normalise(image: tf.Tensor) -> tf.Tensor:
    """Per-image min-max scaling to [0, 1] of ``[batch, rows, cols, ch]`` (the Transform
    and the serving graph both apply it, so serving sees what training saw)."""
    image = tf.cast(image, tf.float32)
    lo = tf.reduce_min(image, axis=[1, 2, 3], keepdims=True)
    hi = tf.reduce_max(image, axis=[1, 2, 3], keepdims=True)
    return (image - lo) / tf.maximum(hi - lo, 1e-6)


def build_affine_net(input_shape: tuple[int, int], width: int = 16):
    """``[fixed, moving] -> affine field`` [batch, rows, cols, 2]: strided convolutions down
    to at most 4x4, a dense layer, and 6 affine parameters (:class:`.layers.AffineFlow`)
    from a zero-initialised head, so the untrained stage is the identity."""
    import keras
    from keras import layers

    rows, cols = input_shape
    fixed = keras.Input((rows, cols, 1), name="fixed")
    moving = keras.Input((rows, cols, 1), name="moving")
    x = layers.Concatenate(name="pair")([fixed, moving])
    level = 0
    while max(rows, cols) // 2**level > 4 and min(rows, cols) // 2 ** (level + 1) >= 2:
        filters = width * 2 ** min(level, 2)
        x = layers.Conv2D(filters, 3, strides=2, padding="same", name=f"aff{level}")(x)
        x = layers.LeakyReLU(0.2, name=f"aff{level}_act")(x)
        level += 1
    x = layers.Dense(4 * width, activation="relu", name="aff_dense")(layers.Flatten()(x))
    theta = layers.Dense(6, kernel_initializer="zeros", name="theta", dtype="float32")(x)
    field = AffineFlow(rows, cols, name="affine_field")(theta)
    return keras.Model([fixed, moving], field, name=AFFINE_NET)


def build_registration_model(
    input_shape: tuple[int, int],
    width: int = 16,
    depth: int = 3,
    integration_steps: int = 0,
    affine: bool = False,
    affine_output: bool = False,
):
    """U-Net registration model; stage ``k`` of the encoder has ``width * 2**min(k, 2)``
    channels; ``integration_steps`` > 0 makes the field diffeomorphic (scaling and squaring);
    ``affine`` puts the affine stage first (see the module docstring); ``affine_output``
    adds its field as a third output (training; :func:`served_outputs` drops it).

    Raises:
        ValueError: rows or cols not divisible by ``2**depth``, or width/depth below 1.
    """
    import keras
    from keras import layers

    rows, cols = input_shape
    if depth < 1 or width < 1 or rows % 2**depth or cols % 2**depth:
        raise ValueError(
            f"registration U-Net depth={depth} width={width} on {rows}x{cols}: need depth, "
            f"width >= 1 and rows, cols divisible by 2**depth={2**depth}"
        )

    fixed = keras.Input((rows, cols, 1), name="fixed")
    moving = keras.Input((rows, cols, 1), name="moving")
    source = moving
    if affine:
        affine_field = build_affine_net(input_shape, width)([fixed, moving])
        source = SpatialTransformer(name="warp_affine")([moving, affine_field])
    pair = layers.Concatenate(name="pair")([fixed, source])
    field = _unet_field(pair, width, depth)
    if integration_steps > 0:
        field = VecInt(integration_steps, name="integrate")(field)
    if affine:
        field = Compose(name="compose")([affine_field, field])
    warped = SpatialTransformer(name="warp")([moving, field])
    name = f"regnet_d{depth}_w{width}" + ("_diffeo" if integration_steps else "")
    name += "_affine" if affine else ""
    outputs = [warped, field] + ([affine_field] if affine and affine_output else [])
    return keras.Model([fixed, moving], outputs, name=name)


def _unet_field(pair, width: int, depth: int):
    """The U-Net from the concatenated pair to a 2-channel displacement field (float32, near 0
    at the start)."""
    import keras
    from keras import layers

    def conv(x, filters: int, name: str, strides: int = 1):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", name=name)(x)
        return layers.LeakyReLU(0.2, name=f"{name}_act")(x)

    x = conv(pair, width, "enc0")
    skips = [x]
    for level in range(1, depth + 1):
        x = conv(x, width * 2 ** min(level, 2), f"enc{level}", strides=2)
        skips.append(x)
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = conv(x, width * 2 ** min(level, 2), f"dec{level}")
    x = conv(x, width, "head")
    return layers.Conv2D(
        2,
        3,
        padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-5),
        bias_initializer="zeros",
        dtype="float32",
        name="field",
    )(x)


def served_outputs(model):
    """``model`` with its first two outputs (warped, flow): the layers and weights shared."""
    import keras

    if len(model.outputs) == 2:
        return model
    return keras.Model(model.inputs, model.outputs[:2], name=model.name)
