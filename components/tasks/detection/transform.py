"""TFX Transform module of the detection task: the shared image preprocessing, plus the
manifest's ``boxes`` (JSON text, source pixels) and the resample geometry that maps them onto
the model-input grid (:mod:`components.tasks.detection.boxes`) passed through."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from medflow.components.models.preprocessing import preprocessing_fn as image_preprocessing_fn
from medflow.core import features

BOXES = "boxes"


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any]) -> dict[str, Any]:
    """``image`` as the shared Transform makes it; ``boxes`` string [batch],
    ``resample_scale`` float32 [batch] and ``resample_pad`` int64 [batch, 2] as ingested."""
    outputs = image_preprocessing_fn(inputs, custom_config)
    if BOXES in inputs:
        outputs[BOXES] = tf.reshape(inputs[BOXES], [-1])
        outputs[features.RESAMPLE_SCALE] = tf.reshape(inputs[features.RESAMPLE_SCALE], [-1])
        outputs[features.RESAMPLE_PAD] = tf.reshape(
            tf.cast(inputs[features.RESAMPLE_PAD], tf.int64), [-1, 2]
        )
    return outputs
