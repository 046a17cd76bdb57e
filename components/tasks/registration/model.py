"""The registration network (Keras 3): a small U-Net on the stacked (fixed, moving) pair
predicting a dense displacement field, optionally integrated by scaling and squaring
(diffeomorphic), and the spatial transformer that warps the moving image with it.

``build_registration_model`` returns a model ``[fixed, moving] -> [warped, flow]`` with
fixed and moving float32 ``[batch, rows, cols, 1]`` (normalised, :func:`normalise`).
"""

from __future__ import annotations

import tensorflow as tf

from medflow.components.tasks.registration.layers import SpatialTransformer, VecInt


def normalise(image: tf.Tensor) -> tf.Tensor:
    """Per-image min-max scaling to [0, 1] of ``[batch, rows, cols, ch]`` (the Transform
    and the serving graph both apply it, so serving sees what training saw)."""
    image = tf.cast(image, tf.float32)
    lo = tf.reduce_min(image, axis=[1, 2, 3], keepdims=True)
    hi = tf.reduce_max(image, axis=[1, 2, 3], keepdims=True)
    return (image - lo) / tf.maximum(hi - lo, 1e-6)


def build_registration_model(
    input_shape: tuple[int, int], width: int = 16, depth: int = 3, integration_steps: int = 0
):
    """U-Net registration model; stage ``k`` of the encoder has ``width * 2**min(k, 2)``
    channels; ``integration_steps`` > 0 makes the field diffeomorphic (scaling and squaring).

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

    def conv(x, filters: int, name: str, strides: int = 1):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", name=name)(x)
        return layers.LeakyReLU(0.2, name=f"{name}_act")(x)

    fixed = keras.Input((rows, cols, 1), name="fixed")
    moving = keras.Input((rows, cols, 1), name="moving")
    x = conv(layers.Concatenate(name="pair")([fixed, moving]), width, "enc0")
    skips = [x]
    for level in range(1, depth + 1):
        x = conv(x, width * 2 ** min(level, 2), f"enc{level}", strides=2)
        skips.append(x)
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = conv(x, width * 2 ** min(level, 2), f"dec{level}")
    x = conv(x, width, "head")
    field = layers.Conv2D(
        2,
        3,
        padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-5),
        bias_initializer="zeros",
        dtype="float32",
        name="field",
    )(x)
    if integration_steps > 0:
        field = VecInt(integration_steps, name="integrate")(field)
    warped = SpatialTransformer(name="warp")([moving, field])
    name = f"regnet_d{depth}_w{width}" + ("_diffeo" if integration_steps else "")
    return keras.Model([fixed, moving], [warped, field], name=name)
