"""The classification export: the Keras model behind the Transform graph, with the
``probabilities``, ``class_id`` and ``score`` outputs the serving contract lists, and the
class names themselves: ``class_name`` (the predicted class's name, string [None]) and
``classes`` (every name in output order, string [None, n_classes], as TF Serving's Classify
API and the Estimator heads return them), so any TF Serving client gets names, not indices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from medflow.components.models.export import save_with_transform

# The string outputs that carry the class names (the platform's client reads ``classes``).
NAME_OUTPUTS = ("class_name", "classes")


def classification_head(labels: Sequence[str]) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """probabilities [None, n_classes] -> ``probabilities``, ``class_id``, ``score``,
    ``class_name`` and ``classes`` (``labels`` are the class names in output order)."""
    names = [str(x) for x in labels]
    n_classes = len(names)
    if n_classes < 2 or len(set(names)) != n_classes:
        raise ValueError(f"class names {names}: need at least 2, all different")

    def head(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        table = tf.constant(names)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        if n_classes == 2:
            score = probabilities[:, 1]
        else:
            score = tf.reduce_max(probabilities, axis=-1)
        batch = tf.shape(probabilities)[0]
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "score": score,
            "class_name": tf.gather(table, class_id),
            "classes": tf.tile(table[tf.newaxis, :], tf.stack([batch, 1])),
        }

    return head


def export_serving_model(
    model, tft_output, path: str, input_shape, labels: Sequence[str], info: dict[str, Any]
) -> None:
    """:func:`save_with_transform` with :func:`classification_head` of ``labels``."""
    save_with_transform(model, tft_output, path, input_shape, classification_head(labels), info)
