"""Keras 3 convolutional autoencoder and VAE with the project's backbones as encoders.

The encoder is a classification backbone (:mod:`components.models.backbones`: ``small_cnn``
or ``resnet18``) up to its global pooling, built by the same functions as the classifier's,
so its weights can initialise a classifier (:mod:`components.models.encoder_init`). The
decoder maps the latent code back to the input grid (transposed convolutions, then a crop).

Both take the Transform's z-scored image and output the reconstruction in those units; the
VAE (Kingma & Welling 2014) also adds its KL term to the loss and samples only in training.
"""

from __future__ import annotations

import math

# The encoder sub-model's name inside an autoencoder (what encoder_init reads).
ENCODER = "encoder"
KINDS = ("ae", "vae")
ENCODER_BACKBONES = ("small_cnn", "resnet18")


def build_encoder(input_shape, backbone: str, width: int):
    """``image`` -> pooled features, built as the classifier builds its backbone."""
    import keras

    from medflow.components.models.backbones import resnet18, small_cnn

    inputs = keras.Input(shape=input_shape, name="image", dtype="float32")
    if backbone == "small_cnn":
        features = small_cnn(inputs, width)
    elif backbone == "resnet18":
        features = resnet18(inputs, width, small_input=max(input_shape[:2]) <= 64)
    else:
        raise ValueError(f"backbone={backbone!r}: an autoencoder encodes with {ENCODER_BACKBONES}")
    return keras.Model(inputs, features, name=ENCODER)


def upsamplings(rows: int, cols: int) -> int:
    """Transposed-convolution stages of the decoder: a 4-7 px seed grid doubled up to size."""
    return max(1, min(5, int(math.log2(max(1, min(rows, cols) // 4)))))


def _decoder(z, input_shape, width: int):
    import keras

    rows, cols, channels = input_shape
    n_up = upsamplings(rows, cols)
    seed = (math.ceil(rows / 2**n_up), math.ceil(cols / 2**n_up))
    filters = width * 2 ** min(n_up, 3)
    x = keras.layers.Dense(seed[0] * seed[1] * filters, activation="relu")(z)
    x = keras.layers.Reshape((*seed, filters))(x)
    for _ in range(n_up):
        filters = max(width, filters // 2)
        x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(channels, 1, dtype="float32", name="reconstruction")(x)
    extra = (x.shape[1] - rows, x.shape[2] - cols)
    if extra != (0, 0):
        x = keras.layers.Cropping2D(((0, extra[0]), (0, extra[1])))(x)
    return x


def _sampling_layer():
    import keras

    class Sampling(keras.layers.Layer):
        """z = mu + exp(logvar / 2) * eps in training, mu otherwise; adds the KL loss."""

        def __init__(self, kl_weight: float, seed: int, **kwargs):
            super().__init__(**kwargs)
            self.kl_weight = kl_weight
            self.seed = keras.random.SeedGenerator(seed)

        def call(self, mu, logvar, training=None):
            kl = kl_divergence(mu, logvar)
            self.add_loss(self.kl_weight * keras.ops.mean(kl))
            if not training:
                return mu
            eps = keras.random.normal(keras.ops.shape(mu), seed=self.seed)
            return mu + keras.ops.exp(0.5 * logvar) * eps

    return Sampling


def kl_divergence(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, 1)) per example (nats)."""
    import keras

    ops = keras.ops
    return -0.5 * ops.sum(1.0 + logvar - ops.square(mu) - ops.exp(logvar), axis=-1)


def _faster_batch_norm(model, momentum: float = 0.9) -> None:
    """Batch-norm moving statistics that follow a few hundred steps (Keras' 0.99 needs
    thousands: on a small set the inference-mode reconstructions lag far behind training's)."""
    import keras

    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def build_autoencoder(hp):
    """(autoencoder, serving model) for ``hp`` (an :class:`AEHParams`).

    The autoencoder maps the image to its reconstruction (the VAE's KL term is a layer
    loss). The serving model, sharing its weights, returns one float32 tensor the export
    head splits: reconstruction, input and the KL per example broadcast over the grid
    (zero for a plain autoencoder), concatenated on the channel axis.
    """
    import keras

    encoder = build_encoder(hp.input_shape, hp.backbone, hp.width)
    inputs = keras.Input(shape=hp.input_shape, name="image", dtype="float32")
    noisy = inputs  # denoising: the clean image is the target, the noise is training-only
    if hp.noise > 0:
        noisy = keras.layers.GaussianNoise(hp.noise, seed=hp.seed, name="denoising")(inputs)
    features = encoder(noisy)
    if hp.kind == "vae":
        mu = keras.layers.Dense(hp.latent_dim, name="mu")(features)
        logvar = keras.layers.Dense(hp.latent_dim, name="logvar")(features)
        z = _sampling_layer()(hp.kl_weight, hp.seed, name="sampling")(mu, logvar)
        kl = kl_divergence(mu, logvar)
    else:
        z = keras.layers.Dense(hp.latent_dim, name="latent")(features)
        kl = keras.ops.zeros_like(z[:, :1])[:, 0]
    reconstruction = _decoder(z, hp.input_shape, hp.width)
    model = keras.Model(inputs, reconstruction, name=f"medflow_{hp.kind}_{hp.backbone}")
    _faster_batch_norm(model)
    kl_map = keras.ops.ones_like(inputs[..., :1]) * keras.ops.reshape(kl, (-1, 1, 1, 1))
    served = keras.layers.Concatenate(dtype="float32")([reconstruction, inputs, kl_map])
    return model, keras.Model(inputs, served, name=f"{model.name}_serving")
