"""TFX Transform module of the registration task: the pair's ``fixed`` and ``moving``
images decoded and scaled per image to [0, 1] (:func:`.model.normalise`, which the serving
graph applies too), the masks as 0/1 floats, ``has_masks`` and the slicing features."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from medflow.components.models.preprocessing import _dense_strings, decode_image, decode_mask
from medflow.components.models.preprocessing import image_shape as _image_shape
from medflow.components.tasks.registration.model import normalise
from medflow.core import features

FIXED, MOVING = "fixed", "moving"
FIXED_MASK, MOVING_MASK, HAS_MASKS = "fixed_mask", "moving_mask", "has_masks"


def decode_masks(mask_bytes: tf.Tensor, rows: int, cols: int) -> tf.Tensor:
    """Raw uint8 mask bytes [batch] -> float32 0/1 [batch, rows, cols, 1] (any class > 0)."""
    return tf.cast(decode_mask(mask_bytes, rows, cols) > 0, tf.float32)[..., None]


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any]) -> dict[str, Any]:
    """``fixed``/``moving`` float32 [batch, rows, cols, 1] in [0, 1]; ``fixed_mask`` /
    ``moving_mask`` float32 0/1 of that shape and ``has_masks`` float32 [batch] when
    ingested; the slicing features as strings."""
    shape = _image_shape(custom_config)
    if shape[2] != 1:
        raise ValueError(f"channels={shape[2]}: registration takes grey images (channels 1)")
    outputs: dict[str, Any] = {
        name: normalise(decode_image(inputs[name], shape)) for name in (FIXED, MOVING)
    }
    if FIXED_MASK in inputs:
        for name in (FIXED_MASK, MOVING_MASK):
            outputs[name] = decode_masks(inputs[name], shape[0], shape[1])
        outputs[HAS_MASKS] = tf.reshape(tf.cast(inputs[HAS_MASKS], tf.float32), [-1])
    for name in features.SLICE_FEATURES:
        if name in inputs:
            outputs[name] = _dense_strings(inputs[name])
    return outputs
