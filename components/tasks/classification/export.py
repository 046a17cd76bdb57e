"""The classification export: the Keras model behind the Transform graph, with the
``probabilities``, ``class_id`` and ``score`` outputs the serving contract lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from medflow.components.models.export import save_with_transform


def classification_head(n_classes: int) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """probabilities [None, n_classes] -> ``probabilities``, ``class_id``, ``score``."""

    def head(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        if n_classes == 2:
            score = probabilities[:, 1]
        else:
            score = tf.reduce_max(probabilities, axis=-1)
        return {"probabilities": probabilities, "class_id": class_id, "score": score}

    return head


def export_serving_model(
    model, tft_output, path: str, input_shape, n_classes: int, info: dict[str, Any]
) -> None:
    """:func:`save_with_transform` with :func:`classification_head`."""
    save_with_transform(model, tft_output, path, input_shape, classification_head(n_classes), info)
