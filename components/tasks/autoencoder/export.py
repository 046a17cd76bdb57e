"""The autoencoder export: the serving model behind the Transform graph (as every task's, see
:func:`components.models.export.save_with_transform`).

``serving_default`` (``image`` float32 [None, rows, cols, channels], raw pixels) and
``serve_examples`` return:

- ``reconstruction`` float32 [None, rows, cols, channels]: in the Transform's normalised
  (z-scored) units, the units the model was trained in;
- ``score`` float32 [None]: the mean squared reconstruction error per image (higher = more
  unusual): the out-of-distribution score;
- ``elbo`` float32 [None]: the evidence lower bound per image in nats, up to the constant of
  a unit-variance Gaussian likelihood: ``-(0.5 * sum of squared errors + KL)``; a plain
  autoencoder is the point-mass case (KL = 0), so its ``elbo`` is the likelihood term alone.

``serve_examples`` (what the Evaluator runs) also returns ``threshold`` float32 [None]: the
guard's calibrated out-of-distribution threshold (``training.json``'s ``guard.threshold``),
from which TFMA counts the eval split's false alarms (:mod:`tfma_metrics`). The served
decision is the contract's threshold (the same number); ``serving_default`` does not carry it.

Beside the SavedModel, ``assets.extra/encoder.weights.npz`` holds the encoder's weights
(layer by layer) for initialising a classifier's backbone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from medflow.components.models.encoder_init import ENCODER_WEIGHTS, weight_layers
from medflow.components.models.export import ServingModule, save_with_transform
from medflow.core.files import atomic_open

# The serve_examples output carrying the guard's threshold (read by tfma_metrics).
THRESHOLD = "threshold"


def autoencoder_head(channels: int) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """The serving model's [None, rows, cols, 2 * channels + 1] tensor (reconstruction, input,
    KL broadcast) -> ``reconstruction``, ``score`` and ``elbo``."""

    def head(served: tf.Tensor) -> dict[str, tf.Tensor]:
        reconstruction = served[..., :channels]
        error = tf.square(reconstruction - served[..., channels : 2 * channels])
        kl = served[:, 0, 0, 2 * channels]
        return {
            "reconstruction": reconstruction,
            "score": tf.reduce_mean(error, axis=[1, 2, 3]),
            "elbo": -(0.5 * tf.reduce_sum(error, axis=[1, 2, 3]) + kl),
        }

    return head


def with_threshold(threshold: float) -> type[ServingModule]:
    """A :class:`ServingModule` whose ``serve_examples`` adds ``threshold`` per image."""

    class GuardServingModule(ServingModule):
        def _serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
            out = super()._serve_examples(examples)
            value = tf.constant(threshold, tf.float32)
            return {**out, THRESHOLD: tf.fill(tf.shape(out["score"]), value)}

    return GuardServingModule


def encoder_weights(encoder) -> dict[str, np.ndarray]:
    """``{"<layer index>_<weight index>": array}`` of the encoder's conv/BN layers, in build
    order (what :func:`components.models.encoder_init.initialise` reads)."""
    layers = weight_layers(encoder)
    return {
        f"{i:03d}_{j:02d}": np.asarray(w)
        for i, layer in enumerate(layers)
        for j, w in enumerate(layer.get_weights())
    }


def export_autoencoder(
    served, encoder, tft_output, path: str, input_shape, info: dict[str, Any]
) -> None:
    """Save the serving model with the Transform graph to ``path`` (with ``info``'s guard
    threshold in ``serve_examples``), and the encoder's weights to
    ``assets.extra/encoder.weights.npz``."""
    head = autoencoder_head(input_shape[-1])
    threshold = (info.get("guard") or {}).get("threshold")
    module = ServingModule if threshold is None else with_threshold(float(threshold))
    save_with_transform(served, tft_output, path, input_shape, head, info, module)
    with atomic_open(os.path.join(path, ENCODER_WEIGHTS), "wb") as f:
        np.savez(f, **encoder_weights(encoder))
