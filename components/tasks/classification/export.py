"""The classification export: the Keras model behind the Transform graph, with the
``probabilities``, ``class_id`` and ``score`` outputs the serving contract lists, and the
class names themselves: ``class_name`` (the predicted class's name, string [None]) and
``classes`` (every name in output order, string [None, n_classes], as TF Serving's Classify
API and the Estimator heads return them), so any TF Serving client gets names, not indices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from medflow.components.models.export import ServingModule, save_with_transform
from medflow.components.models.gradcam import gradcam, gradcam_model

# The string outputs that carry the class names (the platform's client reads ``classes``).
NAME_OUTPUTS = ("class_name", "classes")


def classification_head(
    labels: Sequence[str], calibration=None, threshold: float | None = None
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """probabilities [None, n_classes] -> ``probabilities``, ``class_id``, ``score``,
    ``class_name`` and ``classes`` (``labels`` are the class names in output order).

    ``calibration`` (a :class:`components.models.calibration.Calibration`) maps the model's
    probabilities first, so every output is calibrated. ``threshold`` (binary models: the
    operating point) makes ``class_id`` 1 where ``score >= threshold`` and adds the
    ``threshold`` output [None] so clients show the cut-off they were given; without it the
    most probable class wins."""
    names = [str(x) for x in labels]
    n_classes = len(names)
    if n_classes < 2 or len(set(names)) != n_classes:
        raise ValueError(f"class names {names}: need at least 2, all different")

    if threshold is not None and n_classes != 2:
        raise ValueError(f"an operating point needs 2 classes, not {n_classes}")

    def head(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        if calibration is not None:
            probabilities = calibration.apply_tf(probabilities)
        table = tf.constant(names)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        if n_classes == 2:
            score = probabilities[:, 1]
        else:
            score = tf.reduce_max(probabilities, axis=-1)
        batch = tf.shape(probabilities)[0]
        extra = {}
        if threshold is not None:
            cut = tf.constant(threshold, tf.float32)
            class_id = tf.cast(score >= cut, tf.int64)
            extra["threshold"] = tf.fill(tf.expand_dims(batch, 0), cut)
        return {
            **extra,
            "probabilities": probabilities,
            "class_id": class_id,
            "score": score,
            "class_name": tf.gather(table, class_id),
            "classes": tf.tile(table[tf.newaxis, :], tf.stack([batch, 1])),
        }

    return head


class ExplainingModule(ServingModule):
    """The serving module plus the ``explain`` signature: the ``serving_default`` outputs and
    ``heatmap`` float32 [None, rows, cols], the Grad-CAM map (model-input grid, [0, 1]) of
    the class the head decides (:mod:`components.models.gradcam`)."""

    def __init__(self, model, *args, **kwargs):
        super().__init__(model, *args, **kwargs)
        self._gradcam = gradcam_model(model)
        self.explain = tf.function(self._explain, input_signature=[self._image_input])

    def signatures(self) -> dict:
        return {**super().signatures(), "explain": self.explain.get_concrete_function()}

    def _explain(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        def decided(probabilities):
            return self._head(probabilities)["class_id"]

        heatmap, probabilities = gradcam(self._gradcam, self._transformed(image), decided)
        return {**self._head(probabilities), "heatmap": heatmap}


def export_serving_model(
    model,
    tft_output,
    path: str,
    input_shape,
    labels: Sequence[str],
    info: dict[str, Any],
    calibration=None,
    threshold: float | None = None,
) -> None:
    """:func:`save_with_transform` with :func:`classification_head` of ``labels`` (and the
    fitted ``calibration`` and operating-point ``threshold``)."""
    head = classification_head(labels, calibration, threshold)
    save_with_transform(model, tft_output, path, input_shape, head, info, ExplainingModule)
