"""A small anchor-free detector (CenterNet, Zhou et al. 2019, "Objects as Points") in Keras 3.

Encoder: the project's ResNet basic blocks (``components.models.backbones``) down to stride
32; decoder: upsampling with lateral skips back to stride :data:`STRIDE`. One output tensor
``[batch, rows/4, cols/4, n_classes + 4]``: per-class centre heatmaps (sigmoid), then box
width and height (in stride cells) and the centre's sub-cell offset (x, y). keras-hub's
RetinaNet is not installable on this stack and no pretrained weights are reachable, so the
detector is written here and trained from scratch on the project's data.
"""

from __future__ import annotations

import math

STRIDE = 4
# Heatmap bias so that the initial centre probability is ~0.1 (CenterNet's prior).
HEATMAP_PRIOR_BIAS = -math.log((1 - 0.1) / 0.1)
SIZE_WEIGHT = 0.1
OFFSET_WEIGHT = 1.0


def build_centernet(input_shape: tuple[int, int, int], n_classes: int, width: int = 16):
    """The detector for ``input_shape`` (rows and cols divisible by 32)."""
    import keras

    from medflow.components.models.backbones import _basic_block, _conv_bn

    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, width, stride=2, kernel=5)  # stride 2
    skips = []
    for stage in range(4):  # strides 4, 8, 16, 32
        x = _basic_block(x, width * 2 ** (stage + 1), 2)
        x = _basic_block(x, width * 2 ** (stage + 1), 1)
        skips.append(x)
    for skip in reversed(skips[:-1]):  # back to stride 4
        x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
        lateral = keras.layers.Conv2D(x.shape[-1], 1, use_bias=False)(skip)
        x = _conv_bn(keras.layers.Add()([x, lateral]), skip.shape[-1])
    feat = _conv_bn(x, width * 4)
    heat = keras.layers.Conv2D(
        n_classes,
        1,
        activation="sigmoid",
        bias_initializer=keras.initializers.Constant(HEATMAP_PRIOR_BIAS),
        dtype="float32",
        name="heatmap",
    )(feat)
    # softplus, not relu: a relu size channel whose pre-activations start negative gets no
    # gradient and stays 0 (measured: Sunnybrook LV boxes all 0 px wide after 30 epochs)
    size = keras.layers.Conv2D(2, 1, activation="softplus", dtype="float32", name="size")(feat)
    offset = keras.layers.Conv2D(2, 1, activation="sigmoid", dtype="float32", name="offset")(feat)
    out = keras.layers.Concatenate(dtype="float32", name="centernet")([heat, size, offset])
    return keras.Model(inputs, out, name=f"centernet_w{width}")


def centernet_loss(n_classes: int):
    """Focal loss on the heatmaps (normalised by the number of centres) + L1 on size and
    offset at the centres; targets from :func:`boxes.centernet_targets`."""
    from keras import ops

    def loss(y_true, y_pred):
        heat_t, heat_p = y_true[..., :n_classes], ops.clip(y_pred[..., :n_classes], 1e-4, 1 - 1e-4)
        centre = y_true[..., n_classes + 4]
        pos = ops.cast(heat_t >= 1.0 - 1e-6, "float32")
        pos_loss = ops.log(heat_p) * (1 - heat_p) ** 2 * pos
        neg_loss = ops.log(1 - heat_p) * heat_p**2 * (1 - heat_t) ** 4 * (1 - pos)
        n = ops.maximum(ops.sum(centre), 1.0)
        focal = -(ops.sum(pos_loss) + ops.sum(neg_loss)) / n
        reg = ops.abs(y_pred[..., n_classes:] - y_true[..., n_classes : n_classes + 4])
        size_l1 = ops.sum(ops.sum(reg[..., :2], axis=-1) * centre) / n
        offset_l1 = ops.sum(ops.sum(reg[..., 2:], axis=-1) * centre) / n
        return focal + SIZE_WEIGHT * size_l1 + OFFSET_WEIGHT * offset_l1

    return loss
