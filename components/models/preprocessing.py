"""TFX Transform module: decode the ingested image bytes and normalise them.

The Transform component calls :func:`preprocessing_fn` with ``custom_config`` =
``{"image_size": int | [rows, cols], "channels": int}``. The image feature holds raw
little-endian float32 bytes (see :mod:`medflow.core.features`); the output
``image`` is float32 ``[batch, rows, cols, channels]`` scaled to zero mean and unit
variance with the mean/variance of all training pixels (TFT analyzers), so serving
applies exactly the same constants as training.
"""

from __future__ import annotations

import sys
from typing import Any

import tensorflow as tf

from medflow.components.models.hparams import input_shape
from medflow.core import features

# Transformed feature names (kept equal to the raw ones: the model input is "image").
IMAGE_XF = features.IMAGE
LABEL_XF = features.LABEL
MASK_XF = features.MASK
# The patient id passes through too: the Trainer's bootstrap intervals resample patients.
PASSTHROUGH = (*features.SLICE_FEATURES, features.PATIENT_ID)


def image_shape(custom_config: dict[str, Any] | None) -> tuple[int, int, int]:
    """(rows, cols, channels) of the model input from a Transform/Trainer custom_config."""
    return input_shape(custom_config)


def decode_image(image_bytes: tf.Tensor, shape: tuple[int, int, int]) -> tf.Tensor:
    """Raw float32 bytes ``[batch]`` or ``[batch, 1]`` -> float32 ``[batch, rows, cols, ch]``."""
    flat = tf.reshape(image_bytes, [-1])
    pixels = tf.io.decode_raw(flat, tf.float32, little_endian=True)
    return tf.reshape(pixels, [-1, *shape])


_BYTE_STRINGS = tuple(bytes([i]) for i in range(256))


def encode_image(images: tf.Tensor) -> tf.Tensor:
    """Inverse of :func:`decode_image`: float32 ``[batch, ...]`` -> raw bytes ``[batch]``.

    Used by the serving signature that takes image tensors, so that it runs the very same
    Transform graph as ``serve_examples`` (TF has no ``encode_raw`` op).
    """
    as_bytes = tf.bitcast(tf.cast(images, tf.float32), tf.uint8)  # [..., 4], host order
    if sys.byteorder != "little":  # the contract is little-endian
        as_bytes = tf.reverse(as_bytes, axis=[-1])
    flat = tf.reshape(as_bytes, [tf.shape(images)[0], -1])
    table = tf.constant(_BYTE_STRINGS)
    return tf.strings.reduce_join(tf.gather(table, tf.cast(flat, tf.int32)), axis=1)


def decode_mask(mask_bytes: tf.Tensor, rows: int, cols: int) -> tf.Tensor:
    """Raw uint8 mask bytes ``[batch]`` or ``[batch, 1]`` -> int64 ``[batch, rows, cols]``."""
    values = tf.io.decode_raw(tf.reshape(mask_bytes, [-1]), tf.uint8)
    return tf.reshape(tf.cast(values, tf.int64), [-1, rows, cols])


def _dense_strings(value: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    if isinstance(value, tf.SparseTensor):
        value = tf.sparse.to_dense(value, default_value=features.UNKNOWN)
        value = tf.cond(
            tf.shape(value)[1] > 0,
            lambda: value[:, 0],
            lambda: tf.fill([tf.shape(value)[0]], features.UNKNOWN),
        )
    return tf.reshape(value, [-1])


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any]) -> dict[str, Any]:
    """TFT preprocessing: image bytes -> normalised float image; label and slices pass through.

    Args:
        inputs: raw features keyed by the names in :mod:`components.models.features`.
        custom_config: ``image_size`` (int or [rows, cols]) and ``channels``.

    Returns:
        ``image`` float32 [batch, rows, cols, channels] (z-scored with training-set
        constants), ``label`` int64 [batch] and ``mask`` int64 [batch, rows, cols] (class
        index per pixel) when present, and the slicing features.
    """
    import tensorflow_transform as tft  # heavy; only the Transform executor needs it

    if features.VOLUME_AFFINE in inputs:  # volume examples: see volume_passthrough
        return volume_passthrough(inputs)
    shape = image_shape(custom_config)
    image = decode_image(inputs[features.IMAGE], shape)
    # One mean/std over every training pixel: per-image scaling would erase contrast
    # differences the model needs, and per-pixel statistics overfit small datasets.
    outputs: dict[str, Any] = {IMAGE_XF: tft.scale_to_z_score(image, elementwise=False)}
    if features.LABEL in inputs:
        outputs[LABEL_XF] = tf.reshape(tf.cast(inputs[features.LABEL], tf.int64), [-1])
    if features.MASK in inputs:
        outputs[MASK_XF] = decode_mask(inputs[features.MASK], shape[0], shape[1])
    for name in PASSTHROUGH:
        if name in inputs:
            outputs[name] = _dense_strings(inputs[name])
    if features.PIXEL_SPACING in inputs:  # the segmentation Trainer's HD95 in mm
        outputs[features.PIXEL_SPACING] = _spacing_pair(inputs[features.PIXEL_SPACING])
    return outputs


def _spacing_pair(value: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """``pixel_spacing`` ([row_mm, col_mm], or empty when unknown) -> float32 [batch, 2],
    zeros where unknown."""
    if isinstance(value, tf.SparseTensor):
        value = tf.sparse.to_dense(value)
    value = tf.cast(value, tf.float32)
    return tf.reshape(tf.pad(value, [[0, 0], [0, 2]])[:, :2], [-1, 2])


def _dense(value: tf.Tensor | tf.SparseTensor, width: int, dtype) -> tf.Tensor:
    if isinstance(value, tf.SparseTensor):
        value = tf.sparse.to_dense(value)
    return tf.reshape(tf.cast(value, dtype), [-1, width])


def volume_passthrough(inputs: dict[str, Any]) -> dict[str, Any]:
    """Volume examples (:mod:`components.ingest.volume_ingest`) are normalised per volume
    at ingestion (intensity scales differ between MR volumes, so training-set constants
    would not fit) and differ in grid between datasets: the voxels, the mask and the grid
    shape pass through as raw bytes; the 3D Trainer decodes them with the grid it reads
    from the data and bakes that grid into the serving model."""
    outputs: dict[str, Any] = {
        IMAGE_XF: tf.reshape(inputs[features.IMAGE], [-1]),
        features.IMAGE_SHAPE: _dense(inputs[features.IMAGE_SHAPE], 4, tf.int64),
    }
    if features.MASK in inputs:
        outputs[MASK_XF] = tf.reshape(inputs[features.MASK], [-1])
    if features.LABEL in inputs:  # a class label per volume (3D classification)
        outputs[LABEL_XF] = tf.reshape(tf.cast(inputs[features.LABEL], tf.int64), [-1])
    if features.VOLUME_SPEC in inputs:  # the Trainer records it in the model contract
        outputs[features.VOLUME_SPEC] = _dense_strings(inputs[features.VOLUME_SPEC])
    for name in PASSTHROUGH:
        if name in inputs:
            outputs[name] = _dense_strings(inputs[name])
    return outputs
