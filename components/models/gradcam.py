"""Grad-CAM (Selvaraju et al., ICCV 2017) inside the exported graph.

The heat map of class c is ``relu(sum_k w_k A_k)`` over the feature maps ``A_k`` of the
model's last spatial layer, with ``w_k`` the spatial mean of ``d p_c / d A_k``; it is
resized (bilinear) to the model input's grid and scaled to [0, 1] per image. Computed with
``tf.GradientTape`` in a ``tf.function``, so a SavedModel signature (and TF Serving) serves it.
"""

from __future__ import annotations

from collections.abc import Callable


def feature_layer(model):
    """The last layer of ``model`` whose output is a 4-D feature map [batch, h, w, k], not
    counting pooling layers (Grad-CAM's "last convolutional layer": a pooled map is coarser)."""
    for layer in reversed(model.layers):
        shape = getattr(getattr(layer, "output", None), "shape", None)
        pooling = "Pooling" in type(layer).__name__
        if shape is not None and len(shape) == 4 and not pooling:
            return layer
    raise ValueError(f"model {model.name} has no 4-D feature map layer for Grad-CAM")


def gradcam_model(model):
    """A Keras model giving (last feature map, the model's output) for ``model``'s input."""
    import keras

    layer = feature_layer(model)
    return keras.Model(model.inputs, [layer.output, model.output], name=f"{model.name}_gradcam")


def gradcam(grad_model, images, pick: Callable):
    """(heat maps [batch, rows, cols] in [0, 1], probabilities [batch, n_classes]).

    Args:
        grad_model: :func:`gradcam_model` of the classifier.
        images: the classifier's input [batch, rows, cols, channels].
        pick: probabilities -> the class index [batch] whose evidence is mapped (the
            class the served head decides).
    """
    import tensorflow as tf

    with tf.GradientTape() as tape:
        maps, probs = grad_model(images, training=False)
        probs = tf.cast(probs, tf.float32)
        chosen = tf.stop_gradient(tf.cast(pick(probs), tf.int32))
        target = tf.gather(probs, chosen, axis=1, batch_dims=1)
    grads = tf.cast(tape.gradient(target, maps), tf.float32)
    maps = tf.cast(maps, tf.float32)
    weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, tf.shape(images)[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(cam, peak), probs
