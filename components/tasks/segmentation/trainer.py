"""TFX Trainer module for binary segmentation (Keras 3 U-Net).

``run_fn`` reads the Transform's ``image`` and ``mask``, trains the U-Net of
:mod:`components.models.unet` with Dice + cross-entropy and paired augmentation, and
exports a SavedModel returning per-pixel probabilities and the mask cut at the threshold
chosen on the eval split for Dice (:mod:`.trust`, :mod:`.export`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from medflow.components.models.hparams import ImageInput
from medflow.components.models.training import transformed_files
from medflow.components.tasks.segmentation.trust import MaskSettings, fit_mask_outputs
from medflow.core import features

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SegHParams(ImageInput):
    """What the segmentation Trainer needs besides the data.

    Attributes:
        image_size: (rows, cols) of the model input (same as the Transform's).
        channels: 1 or 3.
        depth: U-Net poolings (rows and cols must be divisible by ``2**depth``).
        width: channels of the first stage (doubling per level).
        epochs: training epochs.
        batch_size: per-replica batch size.
        learning_rate: peak AdamW learning rate (cosine decay over ``epochs``).
        weight_decay: AdamW weight decay.
        patience: epochs without validation-Dice improvement before stopping (0 = off;
            the best epoch's weights are kept when on).
        augment: random flips, small affine and intensity changes while training.
        validation_fraction: share of the train split held out for validation; 0 uses the
            eval split instead.
        mixed_precision: mixed_float16 compute when a GPU is visible.
        seed: random seed for weights, shuffling and augmentation.
        init: a pushed autoencoder's ``small_cnn`` encoder of this ``width`` initialises the
            U-Net's first three levels (components.models.encoder_init); empty: random.
        init_frozen_epochs: with ``init``, epochs with those levels frozen before all train.
    """

    image_size: tuple[int, int] = (128, 128)
    channels: int = 1
    depth: int = 4
    width: int = 16
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 0
    augment: bool = True
    validation_fraction: float = 0.1
    mixed_precision: bool = False
    seed: int = 42
    init: str = ""
    init_frozen_epochs: int = 0

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> SegHParams:
        """Build from a Trainer custom_config; unknown keys are ignored, bad values raise."""
        hp = cls(**cls.known_values(config))
        rows, cols = hp.image_size
        if hp.depth < 1 or rows % 2**hp.depth or cols % 2**hp.depth:
            raise ValueError(f"image_size {rows}x{cols} is not divisible by 2**depth={2**hp.depth}")
        if hp.epochs < 1 or hp.batch_size < 1 or hp.width < 1:
            raise ValueError("epochs, batch_size and width must be >= 1")
        if not 0 <= hp.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction={hp.validation_fraction}: use 0..0.5")
        return hp


def transformed_dataset(file_pattern: list[str] | str, tft_output, hp: SegHParams):
    """Unbatched ``(image, mask)`` from transformed GZIP TFRecords (mask as float 0/1)."""
    import tensorflow as tf

    files = transformed_files(file_pattern)
    spec = tft_output.transformed_feature_spec()
    if features.MASK not in spec:
        raise ValueError(
            "the transformed examples hold no 'mask': ingest with a label manifest whose "
            "'mask' column names a mask per image"
        )
    spec = {k: spec[k] for k in (features.IMAGE, features.MASK)}

    def parse(record):
        parsed = tf.io.parse_single_example(record, spec)
        image = tf.reshape(parsed[features.IMAGE], hp.input_shape)
        mask = tf.cast(tf.reshape(parsed[features.MASK], hp.image_size) > 0, tf.float32)
        return image, mask

    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def compile_unet(model, hp: SegHParams, steps_per_epoch: int) -> None:
    import keras

    from medflow.components.tasks.segmentation.unet import dice_ce_loss, hard_dice

    schedule = keras.optimizers.schedules.CosineDecay(
        hp.learning_rate, decay_steps=max(1, steps_per_epoch * hp.epochs), alpha=0.01
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=hp.weight_decay),
        loss=dice_ce_loss,
        metrics=[keras.metrics.MeanMetricWrapper(hard_dice, name="dice")],
    )


def fit(hp: SegHParams, train, validation, log_dir: str | None = None):
    """Build, compile and train the U-Net; returns (model, history dict, train images).

    Args:
        hp: hyperparameters.
        train: unbatched ``(image, mask)`` dataset (cached in memory here).
        validation: unbatched ``(image, mask)`` dataset.
        log_dir: TensorBoard directory, optional.
    """
    import keras
    import tensorflow as tf

    from medflow.components.models.progress import epoch_progress
    from medflow.components.models.training import choose_strategy, set_precision
    from medflow.components.tasks.segmentation.unet import augment, build_unet

    keras.utils.set_random_seed(hp.seed)
    set_precision(hp)
    strategy = choose_strategy()
    train = train.cache()
    n_train = int(train.reduce(0, lambda n, _: n + 1))
    if n_train == 0:
        raise ValueError("the training split is empty")
    batch = hp.batch_size * strategy.num_replicas_in_sync
    steps = math.ceil(n_train / batch)
    train_b = train.shuffle(n_train, seed=hp.seed, reshuffle_each_iteration=True)
    if hp.augment:
        train_b = train_b.map(
            lambda x, y: augment(x, y, hp.seed), num_parallel_calls=tf.data.AUTOTUNE
        )
    train_b = train_b.batch(batch).prefetch(tf.data.AUTOTUNE)
    val_b = validation.cache().batch(batch).prefetch(tf.data.AUTOTUNE)
    with strategy.scope():
        model = build_unet(hp.input_shape, hp.depth, hp.width)
        if hp.init:  # transfer from a pushed encoder (components.models.encoder_init)
            from medflow.components.models.encoder_init import initialise

            log.info("U-Net encoder initialised from %s", initialise(model, hp.init))
    callbacks = [epoch_progress(hp.epochs)]
    if hp.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_dice", mode="max", patience=hp.patience, restore_best_weights=True
            )
        )
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
    from medflow.components.models.encoder_init import fit_in_phases

    def recompile():
        with strategy.scope():
            compile_unet(model, hp, steps)

    history = fit_in_phases(
        model, hp, recompile, train_b, validation_data=val_b, callbacks=callbacks, verbose=2
    )
    return model, history, n_train


def mask_outputs(model, eval_files, tft_output, hp: SegHParams, settings: MaskSettings):
    """(mask threshold, report) of the trained ``model`` on the transformed eval split:
    :func:`.trust.fit_mask_outputs` with the images' patients and pixel spacings."""
    from medflow.components.models.eval_split import predict_split

    keys = (features.MASK, features.PIXEL_SPACING)
    probs, found = predict_split(model, eval_files, tft_output, hp.input_shape, keys, 16)
    masks = found[features.MASK].reshape(probs.shape) > 0
    return fit_mask_outputs(
        settings, probs, masks, found[features.PATIENT_ID], found.get(features.PIXEL_SPACING)
    )


def train_and_export(
    hp: SegHParams,
    train_files,
    eval_files,
    transform_dir: str,
    serving_model_dir: str,
    log_dir: str | None = None,
    settings: MaskSettings | None = None,
) -> dict[str, Any]:
    """Train on the transformed splits, choose the mask threshold on the eval split
    (:mod:`.trust`) and export the serving model; returns its summary."""
    from medflow.components.models.training import transformed_splits
    from medflow.components.tasks.segmentation.export import export_segmentation_model

    tft_output, train, validation, validation_source = transformed_splits(
        hp, train_files, eval_files, transform_dir, transformed_dataset
    )
    model, history, n_train = fit(hp, train, validation, log_dir)
    threshold, report = mask_outputs(model, eval_files, tft_output, hp, settings or MaskSettings())
    info = {
        "task": "segmentation",
        "hparams": hp.to_dict(),
        "architecture": model.name,
        "train_images": n_train,
        "validation": validation_source,
        "epochs_run": len(history.get("loss", [])),
        "history": history,
        "parameters": int(model.count_params()),
        "trust": report,
    }
    export_segmentation_model(model, tft_output, serving_model_dir, hp.input_shape, info, threshold)
    log.info("exported %s to %s", model.name, serving_model_dir)
    return info


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``tfx.components.FnArgs``); volume examples train the 3D
    U-Net (:mod:`.trainer3d`)."""
    import tensorflow_transform as tft

    from medflow.components.models.volume_examples import is_volume_transform
    from medflow.components.tasks.segmentation import trainer3d

    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    if is_volume_transform(tft_output):
        trainer3d.train_volumes_and_export(fn_args, tft_output)
        return
    hp = SegHParams.from_config(fn_args.custom_config)
    settings = MaskSettings.from_config(fn_args.custom_config)
    train_and_export(
        hp,
        fn_args.train_files,
        fn_args.eval_files,
        fn_args.transform_output,
        fn_args.serving_model_dir,
        fn_args.model_run_dir,
        settings,
    )
