"""Export a segmentation model + the Transform graph as a SavedModel (as :mod:`export` does).

Signatures:

- ``serving_default``: ``image`` float32 [None, rows, cols, channels] (pixels as written at
  ingestion, before Transform);
- ``serve_examples``: ``examples`` string [None] (serialized tf.Example).

Both return ``probabilities`` float32 [None, rows, cols] (foreground probability per
pixel, on the model-input grid) and ``mask`` uint8 [None, rows, cols] (probability >= 0.5).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from medflow.components.models.export import save_with_transform

THRESHOLD = 0.5


def segmentation_head(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
    """Per-pixel foreground probability [None, rows, cols] -> ``probabilities``, ``mask``."""
    return {"probabilities": probabilities, "mask": tf.cast(probabilities >= THRESHOLD, tf.uint8)}


def export_segmentation_model(
    model, tft_output, path: str, input_shape, info: dict[str, Any]
) -> None:
    """Save ``model`` (transformed image -> probabilities [rows, cols]) with the Transform
    graph of ``tft_output`` to ``path``; see :func:`components.models.export.save_with_transform`."""
    save_with_transform(model, tft_output, path, input_shape, segmentation_head, info)
