"""Keras 3 training loop shared by the TFX Trainer and the bare-Keras benchmark.

Datasets are unbatched ``tf.data`` of ``(image, label)`` with the Transform's image
(z-scored float32) and int64 labels.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from medflow.components.models.backbones import build_model
from medflow.components.models.hparams import HParams
from medflow.components.models.progress import epoch_progress

log = logging.getLogger(__name__)


def transformed_files(file_pattern: list[str] | str) -> list[str]:
    """The sorted files of a Trainer's ``file_pattern`` (one glob or a list of globs).

    Raises:
        ValueError: no file matches.
    """
    import tensorflow as tf

    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise ValueError(f"no transformed examples match {file_pattern!r}")
    return files


def choose_strategy():
    """MirroredStrategy over several GPUs, OneDeviceStrategy on one, else the default."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    return tf.distribute.get_strategy()


def set_precision(hp: HParams) -> str:
    """Apply the mixed-precision flag; float16 on CPU is slower, so only with a GPU."""
    import keras
    import tensorflow as tf

    policy = "float32"
    if hp.mixed_precision:
        if tf.config.list_logical_devices("GPU"):
            policy = "mixed_float16"
        else:
            log.warning("mixed_precision requested but no GPU is visible: training in float32")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def class_weights(counts: dict[int, int], n_classes: int, mode: str) -> dict[int, float] | None:
    """Inverse-frequency weights (mean 1 over examples) or None."""
    if mode == "none":
        return None
    total = sum(counts.values())
    return {
        c: (total / (n_classes * counts[c])) if counts.get(c) else 1.0 for c in range(n_classes)
    }


def count_labels(dataset) -> dict[int, int]:
    """Examples per class of an unbatched (image, label) dataset."""
    labels = np.fromiter((int(y) for _, y in dataset.as_numpy_iterator()), dtype=np.int64)
    values, counts = np.unique(labels, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def split_holdout(dataset, fraction: float):
    """Deterministic (train, holdout) split of an unbatched dataset: every k-th example."""
    every = max(2, round(1 / fraction))
    indexed = dataset.enumerate()
    train = indexed.filter(lambda i, _: i % every != 0).map(lambda _, ex: ex)
    holdout = indexed.filter(lambda i, _: i % every == 0).map(lambda _, ex: ex)
    return train, holdout


def holdout_or_eval(train, make_eval, fraction: float):
    """(train, validation, description): early stopping watches a holdout of the train
    split when ``fraction`` > 0 (the eval split stays unseen), else ``make_eval()``."""
    if fraction > 0:
        train, validation = split_holdout(train, fraction)
        return train, validation, f"holdout {fraction:.0%} of train"
    return train, make_eval(), "eval split"


def transformed_splits(hp, train_files, eval_files, transform_dir: str, dataset):
    """The Trainer's inputs: (tft_output, train, validation, validation description), with
    ``dataset(files, tft_output, hp)`` reading a split's transformed examples and early
    stopping watching :func:`holdout_or_eval`'s choice."""
    import tensorflow_transform as tft

    tft_output = tft.TFTransformOutput(transform_dir)
    train = dataset(train_files, tft_output, hp)
    train, validation, source = holdout_or_eval(
        train, lambda: dataset(eval_files, tft_output, hp), hp.validation_fraction
    )
    return tft_output, train, validation, source


def compile_model(model, hp: HParams, steps_per_epoch: int) -> None:
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(
        hp.learning_rate, decay_steps=max(1, steps_per_epoch * hp.epochs), alpha=0.01
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=hp.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        + ([_binary_auc()] if hp.n_classes == 2 else []),
    )


def compile_in(strategy, model, hp: HParams, steps_per_epoch: int) -> None:
    """:func:`compile_model` inside ``strategy``'s scope (optimizer variables on its devices)."""
    with strategy.scope():
        compile_model(model, hp, steps_per_epoch)


def _binary_auc():
    import keras

    class PositiveAUC(keras.metrics.AUC):
        """AUC of the class-1 probability against sparse integer labels."""

        def update_state(self, y_true, y_pred, sample_weight=None):
            return super().update_state(y_true, y_pred[:, 1], sample_weight)

    return PositiveAUC(name="auc")


def fit(hp: HParams, train, validation, log_dir: str | None = None):
    """Build, compile and train a model; returns (model, history dict, class counts).

    Args:
        hp: hyperparameters.
        train: unbatched ``(image, label)`` dataset (cached in memory here).
        validation: unbatched ``(image, label)`` dataset for early stopping.
        log_dir: TensorBoard directory (the Trainer's model_run_dir), optional.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(hp.seed)
    set_precision(hp)
    strategy = choose_strategy()
    train = train.cache()
    counts = count_labels(train)
    n_train = sum(counts.values())
    if n_train == 0:
        raise ValueError("the training split is empty")
    hp = hp.for_train_size(n_train)  # the small-data recipe below SMALL_TRAIN images
    log.info("recipe %s for %d training images: %s", hp.recipe, n_train, hp.to_dict())
    batch = hp.batch_size * strategy.num_replicas_in_sync
    steps = math.ceil(n_train / batch)
    train_b = (
        train.shuffle(min(n_train, 10_000), seed=hp.seed, reshuffle_each_iteration=True)
        .batch(batch)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_b = validation.cache().batch(batch).prefetch(tf.data.AUTOTUNE)
    with strategy.scope():
        model = build_model(hp)
        if hp.init:  # transfer from a pushed encoder (components.models.encoder_init)
            from medflow.components.models.encoder_init import initialise

            log.info("backbone initialised from %s", initialise(model, hp.init))
    monitor = "val_auc" if hp.n_classes == 2 else "val_loss"
    callbacks = [epoch_progress(hp.epochs)]
    if hp.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode="max" if monitor == "val_auc" else "min",
                patience=hp.patience,
                restore_best_weights=True,
            )
        )
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
    from medflow.components.models.encoder_init import fit_in_phases

    history = fit_in_phases(
        model,
        hp,
        lambda: compile_in(strategy, model, hp, steps),
        train_b,
        validation_data=val_b,
        class_weight=class_weights(counts, hp.n_classes, hp.class_weight),
        callbacks=callbacks,
        verbose=2,
    )
    return model, history, counts
