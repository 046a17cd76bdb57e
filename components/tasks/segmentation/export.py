"""Export a segmentation model + the Transform graph as a SavedModel (as :mod:`export` does).

Signatures:

- ``serving_default``: ``image`` float32 [None, rows, cols, channels] (pixels as written at
  ingestion, before Transform);
- ``serve_examples``: ``examples`` string [None] (serialized tf.Example).

Both return ``probabilities`` float32 [None, rows, cols] (foreground probability per
pixel, on the model-input grid), ``mask`` uint8 [None, rows, cols] (probability >= the
mask threshold: 0.5, or the one the Trainer chose on the eval split, :mod:`.trust`) and
``threshold`` float32 [None] (that cut-off, so every client applies the same one).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from medflow.components.models.export import save_with_transform

THRESHOLD = 0.5


def segmentation_head(threshold: float = THRESHOLD):
    """The head: per-pixel foreground probability [None, rows, cols] -> ``probabilities``,
    ``mask`` (probability >= ``threshold``) and ``threshold``."""

    def head(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        cut = tf.constant(threshold, tf.float32)
        batch = tf.shape(probabilities)[0]
        return {
            "probabilities": probabilities,
            "mask": tf.cast(probabilities >= cut, tf.uint8),
            "threshold": tf.fill(tf.expand_dims(batch, 0), cut),
        }

    return head


def export_segmentation_model(
    model, tft_output, path: str, input_shape, info: dict[str, Any], threshold: float = THRESHOLD
) -> None:
    """Save ``model`` (transformed image -> probabilities [rows, cols]) with the Transform
    graph of ``tft_output`` to ``path``, masks cut at ``threshold``; see
    :func:`components.models.export.save_with_transform`."""
    head = segmentation_head(threshold)
    save_with_transform(model, tft_output, path, input_shape, head, info)
