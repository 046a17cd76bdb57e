"""Export a Keras 3 model + the Transform graph as a SavedModel with explicit signatures.

Keras 3 cannot host the (tf_keras) TFT layer inside a functional model, so both live in
a ``tf.Module`` whose ``tf.function`` signatures run raw input -> Transform -> model:

- ``serving_default``: ``image`` float32 [None, rows, cols, channels] (pixels as written
  at ingestion, before Transform);
- ``serve_examples``: ``examples`` string [None] (serialized tf.Example).

The outputs are the task's head applied to the model's probabilities: for classification
``probabilities`` [None, n_classes], ``class_id`` int64 [None] and ``score`` float32 [None]
(class-1 probability for binary models, top probability otherwise); segmentation's head is
in :mod:`components.models.seg_export`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from medflow.components.models.preprocessing import encode_image
from medflow.core import features

# Written beside the SavedModel (TF Serving ignores assets.extra); the Pusher reads it.
TRAINING_INFO = os.path.join("assets.extra", "training.json")


class ServingModule(tf.Module):
    """Transform layer + Keras model behind the two serving signatures; ``head`` turns the
    model's float32 output into the task's named outputs."""

    def __init__(
        self,
        model,
        tft_layer,
        input_shape: tuple[int, int, int],
        head: Callable[[tf.Tensor], dict[str, tf.Tensor]],
        image_feature_spec: tf.io.FixedLenFeature | None = None,
    ):
        super().__init__(name="medflow_serving")
        self.model = model
        # Keras 3 keeps layer state (e.g. the seed generators of augmentation and dropout
        # layers) in variables tf.Module does not discover through the model; track the
        # underlying tf.Variables so the SavedModel can capture them.
        self._keras_state = [getattr(v, "value", v) for v in model.variables]
        self.tft_layer = tft_layer
        self._head = head
        # The raw `image` spec of the Transform graph ([] or [1], as SchemaGen inferred).
        self._image_spec = image_feature_spec or tf.io.FixedLenFeature([1], tf.string)
        image_spec = tf.TensorSpec([None, *input_shape], tf.float32, name=features.IMAGE)
        self._image_input = image_spec
        self.serving_default = tf.function(self._serve_images, input_signature=[image_spec])
        self.serve_examples = tf.function(
            self._serve_examples,
            input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
        )

    def signatures(self) -> dict:
        """The concrete functions to save, by signature name (subclasses add their own)."""
        return {
            "serving_default": self.serving_default.get_concrete_function(),
            "serve_examples": self.serve_examples.get_concrete_function(),
        }

    def _predict(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = self.tft_layer({features.IMAGE: image_bytes})
        probabilities = tf.cast(self.model(transformed[features.IMAGE], training=False), tf.float32)
        return self._head(probabilities)

    def _image_bytes(self, image: tf.Tensor) -> tf.Tensor:
        """Image tensors -> the raw ``image`` feature the Transform graph reads."""
        return tf.reshape(encode_image(image), [-1, *self._image_spec.shape])

    def _transformed(self, image: tf.Tensor) -> tf.Tensor:
        """Image tensors -> the model's input (the Transform graph applied)."""
        return self.tft_layer({features.IMAGE: self._image_bytes(image)})[features.IMAGE]

    def _serve_images(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict(self._image_bytes(image))

    def _serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, {features.IMAGE: self._image_spec})
        return self._predict(parsed[features.IMAGE])


def save_with_transform(
    model,
    tft_output,
    path: str,
    input_shape,
    head: Callable[[tf.Tensor], dict[str, tf.Tensor]],
    info: dict[str, Any],
    module_type: type[ServingModule] = ServingModule,
) -> None:
    """Save ``model`` with the Transform graph of ``tft_output`` to ``path``.

    Args:
        model: trained Keras 3 model taking the transformed ``image``.
        tft_output: ``tft.TFTransformOutput`` of the Transform component.
        path: SavedModel directory (TFX's serving_model_dir).
        input_shape: (rows, cols, channels).
        head: the task's outputs from the model's probabilities.
        info: JSON-serialisable training summary stored as ``assets.extra/training.json``.
        module_type: :class:`ServingModule` or a subclass adding signatures.
    """
    image_spec = tft_output.raw_feature_spec()[features.IMAGE]
    module = module_type(
        model, tft_output.transform_features_layer(), input_shape, head, image_spec
    )
    tf.saved_model.save(module, path, signatures=module.signatures())
    extra = os.path.join(path, TRAINING_INFO)
    tf.io.gfile.makedirs(os.path.dirname(extra))
    with tf.io.gfile.GFile(extra, "w") as f:
        f.write(json.dumps(info, indent=2, sort_keys=True))
