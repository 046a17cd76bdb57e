"""TFX Trainer module for autoencoders (Keras 3): labels are never read.

``run_fn`` reads the Transform's ``image`` alone, trains the autoencoder or VAE of
:mod:`model` to reconstruct it, calibrates the out-of-distribution threshold on the eval
split (the ``guard_quantile`` of its reconstruction errors) and exports the SavedModel
(:mod:`export`) with the calibration in ``assets.extra/training.json`` (``guard``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from medflow.components.models.hparams import ImageInput
from medflow.components.models.training import transformed_files
from medflow.core import features

log = logging.getLogger(__name__)
# What AEHParams.pool may name: the splits the autoencoder trains on.
POOLS = ("train", "all")


@dataclasses.dataclass(frozen=True)
class AEHParams(ImageInput):
    """What the autoencoder Trainer needs besides the images.

    Attributes:
        image_size / channels: the model input (the Transform's).
        kind: ``ae`` (deterministic) or ``vae`` (KL + reconstruction).
        backbone: the encoder, ``small_cnn`` or ``resnet18`` (as the classifier builds it).
        width: channels of the backbone's first stage (and the decoder's last).
        latent_dim: size of the code.
        kl_weight: weight of the VAE's KL term (per example; the reconstruction term is
            the mean squared error per pixel).
        noise: standard deviation of Gaussian noise added to the input while training
            (normalised units; a denoising autoencoder), 0 = off.
        epochs / batch_size / learning_rate / weight_decay: the AdamW schedule (cosine).
        patience: epochs without validation-loss improvement before stopping (0 = off).
        validation_fraction: share of train held out for early stopping (and for the
            guard's false-alarm rate outside its calibration split); 0 uses eval.
        guard_quantile: quantile of the eval split's scores that becomes the
            out-of-distribution threshold (0.99: about 1 % of eval images flagged).
        pool: the images it learns: ``train`` (the train split; what a guard needs, its
            threshold is calibrated on eval) or ``all`` (train and eval splits: the
            pretraining pool for ``--hparam init=``; labels are never read either way, so
            studies ingested without a label manifest count too). A model trained on
            ``all`` is no guard: its eval calibration is in sample.
        seed: weights and shuffling.
    """

    image_size: tuple[int, int] = (28, 28)
    channels: int = 1
    kind: str = "ae"
    backbone: str = "small_cnn"
    width: int = 16
    latent_dim: int = 32
    kl_weight: float = 1e-3
    noise: float = 0.0
    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 4
    validation_fraction: float = 0.1
    guard_quantile: float = 0.99
    pool: str = "train"
    seed: int = 42

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> AEHParams:
        """Build from a Trainer custom_config; unknown keys are ignored, bad values raise."""
        from medflow.components.tasks.autoencoder.model import ENCODER_BACKBONES, KINDS

        hp = cls(**cls.known_values(config))
        if hp.kind not in KINDS:
            raise ValueError(f"kind={hp.kind!r}: choose one of {KINDS}")
        if hp.backbone not in ENCODER_BACKBONES:
            raise ValueError(f"backbone={hp.backbone!r}: choose one of {ENCODER_BACKBONES}")
        if hp.noise < 0:
            raise ValueError(f"noise={hp.noise}: use >= 0 (0 = off)")
        if min(hp.epochs, hp.batch_size, hp.width, hp.latent_dim) < 1:
            raise ValueError("epochs, batch_size, width and latent_dim must be >= 1")
        if not 0.5 <= hp.guard_quantile < 1:
            raise ValueError(f"guard_quantile={hp.guard_quantile}: use 0.5..1 (e.g. 0.99)")
        if not 0 <= hp.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction={hp.validation_fraction}: use 0..0.5")
        if hp.pool not in POOLS:
            raise ValueError(f"pool={hp.pool!r}: choose one of {POOLS}")
        return hp


def transformed_dataset(file_pattern: list[str] | str, tft_output, hp: AEHParams):
    """Unbatched ``(image, image)`` from transformed GZIP TFRecords (labels not read)."""
    import tensorflow as tf

    files = transformed_files(file_pattern)
    spec = {features.IMAGE: tft_output.transformed_feature_spec()[features.IMAGE]}

    def parse(record):
        image = tf.reshape(tf.io.parse_single_example(record, spec)[features.IMAGE], hp.input_shape)
        return image, image

    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def fit(hp: AEHParams, train, validation, log_dir: str | None = None):
    """Build and train; returns (autoencoder, serving model, history dict, train images)."""
    import keras
    import tensorflow as tf

    from medflow.components.models.progress import epoch_progress
    from medflow.components.models.training import choose_strategy
    from medflow.components.tasks.autoencoder.model import build_autoencoder

    keras.utils.set_random_seed(hp.seed)
    keras.mixed_precision.set_global_policy("float32")
    strategy = choose_strategy()
    train = train.cache()
    n_train = int(train.reduce(0, lambda n, _: n + 1))
    if n_train == 0:
        raise ValueError("the training split is empty")
    batch = hp.batch_size * strategy.num_replicas_in_sync
    train_b = train.shuffle(n_train, seed=hp.seed).batch(batch).prefetch(tf.data.AUTOTUNE)
    val_b = validation.cache().batch(batch).prefetch(tf.data.AUTOTUNE)
    with strategy.scope():
        model, served = build_autoencoder(hp)
        schedule = keras.optimizers.schedules.CosineDecay(
            hp.learning_rate, decay_steps=max(1, math.ceil(n_train / batch) * hp.epochs)
        )
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=hp.weight_decay)
        model.compile(optimizer=optimizer, loss="mse")
    callbacks = [epoch_progress(hp.epochs)]
    if hp.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=hp.patience, restore_best_weights=True)
        )
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
    history = model.fit(
        train_b, validation_data=val_b, epochs=hp.epochs, callbacks=callbacks, verbose=2
    )
    return model, served, {k: [float(v) for v in h] for k, h in history.history.items()}, n_train


def reconstruction_errors(model, dataset, batch_size: int = 256) -> np.ndarray:
    """Mean squared reconstruction error per image of an unbatched ``(image, _)`` dataset."""
    errors = []
    for images, _ in dataset.batch(batch_size).as_numpy_iterator():
        recon = np.asarray(model(images, training=False))
        errors.append(np.mean(np.square(recon - images), axis=(1, 2, 3)))
    return np.concatenate(errors) if errors else np.zeros(0, np.float32)


def calibrate(eval_scores: np.ndarray, quantile: float, holdout_scores=None) -> dict[str, Any]:
    """The guard's threshold (``quantile`` of ``eval_scores``) and its false-alarm rates:
    on eval (the calibration split: about 1 - quantile by construction) and on the train
    holdout (images the autoencoder did not train on, outside the calibration)."""
    if len(eval_scores) == 0:
        raise ValueError("the eval split is empty: the guard's threshold cannot be calibrated")
    threshold = float(np.quantile(eval_scores, quantile))
    out = {
        "threshold": threshold,
        "quantile": quantile,
        "eval_images": int(len(eval_scores)),
        "false_alarm_rate": float(np.mean(eval_scores > threshold)),
        "score": "mean squared reconstruction error per pixel (normalised units)",
    }
    if holdout_scores is not None and len(holdout_scores):
        out["false_alarm_rate_holdout"] = float(np.mean(holdout_scores > threshold))
        out["holdout_images"] = int(len(holdout_scores))
    return out


def pool_files(hp: AEHParams, train_files, eval_files) -> list[str]:
    """The transformed files the autoencoder trains on (:attr:`AEHParams.pool`)."""

    def as_list(files) -> list[str]:
        return [files] if isinstance(files, str) else list(files)

    return as_list(train_files) + (as_list(eval_files) if hp.pool == "all" else [])


def train_and_export(
    hp: AEHParams, train_files, eval_files, transform_dir: str, serving_model_dir: str, log_dir=None
) -> dict[str, Any]:
    """Train on the transformed train split, calibrate on eval, export; returns the summary."""
    from medflow.components.models.training import transformed_splits
    from medflow.components.tasks.autoencoder.export import export_autoencoder
    from medflow.components.tasks.autoencoder.model import ENCODER

    tft_output, train, validation, source = transformed_splits(
        hp, pool_files(hp, train_files, eval_files), eval_files, transform_dir, transformed_dataset
    )
    model, served, history, n_train = fit(hp, train, validation, log_dir)
    eval_scores = reconstruction_errors(model, transformed_dataset(eval_files, tft_output, hp))
    holdout = reconstruction_errors(model, validation) if hp.validation_fraction > 0 else None
    info = {
        "task": "autoencoder",
        "hparams": hp.to_dict(),
        "backbone": hp.backbone,
        "architecture": model.name,
        "train_images": n_train,
        "validation": source,
        "epochs_run": len(history.get("loss", [])),
        "history": history,
        "parameters": int(model.count_params()),
        "pool": hp.pool,
        "guard": {**calibrate(eval_scores, hp.guard_quantile, holdout), "pool": hp.pool},
    }
    encoder = model.get_layer(ENCODER)
    export_autoencoder(served, encoder, tft_output, serving_model_dir, hp.input_shape, info)
    log.info("exported %s to %s (guard %s)", model.name, serving_model_dir, info["guard"])
    return info


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``tfx.components.FnArgs``)."""
    hp = AEHParams.from_config(fn_args.custom_config)
    train_and_export(
        hp,
        fn_args.train_files,
        fn_args.eval_files,
        fn_args.transform_output,
        fn_args.serving_model_dir,
        fn_args.model_run_dir,
    )
