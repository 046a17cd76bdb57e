"""Export the registration model as a SavedModel with explicit signatures.

- ``serving_default``: ``image`` (the FIXED image) and ``moving``, float32 [None, rows,
  cols, 1] pixels as written at ingestion (the contract's ``image`` input is the fixed
  image, so the platform's input checks apply to it unchanged);
- ``serve_examples``: ``examples`` string [None] (serialized pair tf.Examples, as ingested).

Both scale each image to [0, 1] in the graph (:func:`.model.normalise`, as the Transform
does) and return ``warped`` float32 [None, rows, cols] (the moving image's pixels,
warped), ``displacement`` float32 [None, rows, cols, 2] (row, col offsets in model-grid
pixels: ``warped[y, x] = moving[y + dy, x + dx]``), ``folding_fraction`` float32 [None]
(share of pixels with Jacobian determinant <= 0) and ``ncc`` float32 [None] (local NCC of
fixed and warped). ``serve_examples`` adds ``warped_mask`` and ``moving_mask`` [None, rows,
cols] (the moving mask after and before warping; zeros without masks) and ``ncc_before``,
which the Evaluator's metric reads.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from medflow.components.models.export import TRAINING_INFO
from medflow.components.tasks.registration import layers, losses
from medflow.components.tasks.registration import transform as T
from medflow.components.tasks.registration.model import normalise

FIXED_INPUT = "image"  # serving_default's fixed-image input (the contract's `image`)
SERVING_OUTPUTS = ("warped", "displacement", "folding_fraction", "ncc")


class RegistrationModule(tf.Module):
    """The Keras model behind the two serving signatures (see the module docstring)."""

    def __init__(self, model, image_size: tuple[int, int]):
        super().__init__(name="medflow_registration")
        self.model = model
        self._keras_state = [getattr(v, "value", v) for v in model.variables]
        self._grid = (int(image_size[0]), int(image_size[1]))
        spec = [None, *self._grid, 1]
        self.serving_default = tf.function(
            self._serve_images,
            input_signature=[
                tf.TensorSpec(spec, tf.float32, name=FIXED_INPUT),
                tf.TensorSpec(spec, tf.float32, name=T.MOVING),
            ],
        )
        self.serve_examples = tf.function(
            self._serve_examples,
            input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
        )

    def _register(self, fixed: tf.Tensor, moving: tf.Tensor) -> dict[str, tf.Tensor]:
        fixed_n = normalise(fixed)
        warped_n, flow = self.model([fixed_n, normalise(moving)], training=False)
        flow = tf.cast(flow, tf.float32)
        return {
            "warped": layers.warp(tf.cast(moving, tf.float32), flow)[..., 0],
            "displacement": flow,
            "folding_fraction": layers.folding_fraction(flow),
            "ncc": losses.local_ncc(fixed_n, warped_n),
        }

    def _serve_images(self, image: tf.Tensor, moving: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._register(image, moving)

    def _serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        string = tf.io.FixedLenFeature([], tf.string, default_value="")
        parsed = tf.io.parse_example(
            examples, {T.FIXED: string, T.MOVING: string, T.MOVING_MASK: string}
        )
        shape = (*self._grid, 1)
        fixed = _decode(parsed[T.FIXED], shape)
        moving = _decode(parsed[T.MOVING], shape)
        out = self._register(fixed, moving)
        rows, cols = self._grid
        mask = tf.cond(
            tf.reduce_all(tf.strings.length(parsed[T.MOVING_MASK]) == rows * cols),
            lambda: T.decode_masks(parsed[T.MOVING_MASK], rows, cols),
            lambda: tf.zeros_like(fixed),
        )
        out["warped_mask"] = layers.warp(mask, out["displacement"])[..., 0]
        out["moving_mask"] = mask[..., 0]
        out["ncc_before"] = losses.local_ncc(normalise(fixed), normalise(moving))
        return out


def _decode(image_bytes: tf.Tensor, shape) -> tf.Tensor:
    from medflow.components.models.preprocessing import decode_image

    return decode_image(image_bytes, shape)


def export_registration_model(model, path: str, image_size, info: dict[str, Any]) -> None:
    """Save ``model`` ([fixed, moving] -> [warped, flow] on [0, 1] images) to ``path`` with
    the signatures above, and ``info`` as ``assets.extra/training.json``."""
    module = RegistrationModule(model, image_size)
    signatures = {
        "serving_default": module.serving_default.get_concrete_function(),
        "serve_examples": module.serve_examples.get_concrete_function(),
    }
    tf.saved_model.save(module, path, signatures=signatures)
    extra = os.path.join(path, TRAINING_INFO)
    tf.io.gfile.makedirs(os.path.dirname(extra))
    with tf.io.gfile.GFile(extra, "w") as f:
        f.write(json.dumps(info, indent=2, sort_keys=True))
