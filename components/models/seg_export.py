"""Export a segmentation model + the Transform graph as a SavedModel (as :mod:`export` does).

Signatures:

- ``serving_default``: ``image`` float32 [None, rows, cols, channels] (pixels as written at
  ingestion, before Transform);
- ``serve_examples``: ``examples`` string [None] (serialized tf.Example).

Both return ``probabilities`` float32 [None, rows, cols] (foreground probability per
pixel, on the model-input grid) and ``mask`` uint8 [None, rows, cols] (probability >= 0.5).
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from components.models import features
from components.models.export import TRAINING_INFO
from components.models.preprocessing import encode_image

THRESHOLD = 0.5


class SegmentationServingModule(tf.Module):
    """Transform layer + Keras U-Net behind the two serving signatures."""

    def __init__(self, model, tft_layer, input_shape, image_feature_spec=None):
        super().__init__(name="medflow_segmentation")
        self.model = model
        # Keras 3 layer state lives in variables tf.Module does not find through the model.
        self._keras_state = [getattr(v, "value", v) for v in model.variables]
        self.tft_layer = tft_layer
        self._image_spec = image_feature_spec or tf.io.FixedLenFeature([1], tf.string)
        image_spec = tf.TensorSpec([None, *input_shape], tf.float32, name=features.IMAGE)
        self.serving_default = tf.function(self._serve_images, input_signature=[image_spec])
        self.serve_examples = tf.function(
            self._serve_examples,
            input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
        )

    def _predict(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = self.tft_layer({features.IMAGE: image_bytes})
        probabilities = tf.cast(self.model(transformed[features.IMAGE], training=False), tf.float32)
        mask = tf.cast(probabilities >= THRESHOLD, tf.uint8)
        return {"probabilities": probabilities, "mask": mask}

    def _serve_images(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict(tf.reshape(encode_image(image), [-1, *self._image_spec.shape]))

    def _serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, {features.IMAGE: self._image_spec})
        return self._predict(parsed[features.IMAGE])


def export_segmentation_model(
    model, tft_output, path: str, input_shape, info: dict[str, Any]
) -> None:
    """Save ``model`` with the Transform graph of ``tft_output`` to ``path``.

    Args:
        model: trained Keras 3 model: transformed image -> probabilities [rows, cols].
        tft_output: ``tft.TFTransformOutput`` of the Transform component.
        path: SavedModel directory (TFX's serving_model_dir).
        input_shape: (rows, cols, channels).
        info: JSON-serialisable training summary stored as ``assets.extra/training.json``.
    """
    image_spec = tft_output.raw_feature_spec()[features.IMAGE]
    module = SegmentationServingModule(
        model, tft_output.transform_features_layer(), input_shape, image_spec
    )
    signatures = {
        "serving_default": module.serving_default.get_concrete_function(),
        "serve_examples": module.serve_examples.get_concrete_function(),
    }
    tf.saved_model.save(module, path, signatures=signatures)
    extra = os.path.join(path, TRAINING_INFO)
    tf.io.gfile.makedirs(os.path.dirname(extra))
    with tf.io.gfile.GFile(extra, "w") as f:
        f.write(json.dumps(info, indent=2, sort_keys=True))
