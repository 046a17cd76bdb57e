"""3D segmentation training and inference on volumes held in memory: patch training of the
3D U-Net (:mod:`components.models.unet3d`), sliding-window prediction and per-label Dice.

The TFX Trainer (:mod:`.trainer`) reads the volume examples into arrays and calls
:func:`fit_volumes`; ``benchmarks/volumes.py`` calls the same functions on NIfTI files.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from medflow.components.tasks.segmentation.windows import sample_patch, sliding_window_tf

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Seg3DHParams:
    """What 3D training needs besides the data (keys of the Trainer's custom_config).

    Attributes:
        patch: training patch and inference window (voxels per axis, divisible by 2**depth).
        depth, width: U-Net poolings and first-stage channels.
        steps: optimiser steps in all (patches are sampled afresh at every step).
        batch_size: patches per step.
        learning_rate: peak AdamW learning rate (cosine decay over ``steps``).
        foreground: share of patches centred on a foreground voxel.
        overlap: sliding-window overlap (share of a patch).
        mixed_precision: mixed_float16 compute when a GPU is visible (as for 2D).
        seed: weights and patch sampling.
    """

    patch: tuple[int, int, int] = (32, 32, 32)
    depth: int = 3
    width: int = 16
    steps: int = 400
    batch_size: int = 8
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    foreground: float = 0.67
    overlap: float = 0.5
    mixed_precision: bool = False
    seed: int = 42

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Seg3DHParams:
        """From a Trainer custom_config (``seg3d_`` prefixed keys); bad values raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        prefix = "seg3d_"
        kwargs = {
            k[len(prefix) :]: v
            for k, v in dict(config or {}).items()
            if k.startswith(prefix) and k[len(prefix) :] in known
        }
        if "patch" in kwargs:
            p = kwargs["patch"]
            kwargs["patch"] = (
                (int(p),) * 3 if isinstance(p, int | str) else tuple(int(v) for v in p)
            )
        hp = cls(**kwargs)
        if any(p % 2**hp.depth for p in hp.patch) or min(hp.patch) < 2**hp.depth:
            raise ValueError(f"seg3d_patch {hp.patch} is not divisible by 2**depth={2**hp.depth}")
        if hp.steps < 1 or hp.batch_size < 1 or not 0 <= hp.overlap < 1:
            raise ValueError("seg3d_steps, seg3d_batch_size >= 1 and 0 <= seg3d_overlap < 1")
        return hp

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _patches(images: np.ndarray, masks: np.ndarray, hp: Seg3DHParams):
    rng = np.random.default_rng(hp.seed)
    while True:
        i = int(rng.integers(len(images)))
        image, mask = sample_patch(images[i], masks[i], hp.patch, rng, hp.foreground)
        gain = rng.uniform(0.9, 1.1)  # intensity augmentation (volumes are normalised)
        yield (image * gain + rng.uniform(-0.1, 0.1)).astype(np.float32), mask.astype(np.int32)


def fit_volumes(images: np.ndarray, masks: np.ndarray, n_classes: int, hp: Seg3DHParams):
    """Train a 3D U-Net on patches of ``images`` [n, d, h, w, 1] / ``masks`` [n, d, h, w];
    returns (model, summary)."""
    import keras
    import tensorflow as tf

    from medflow.components.models.training import choose_strategy, set_precision
    from medflow.components.models.unet3d import build_unet3d, dice_ce_loss_3d, foreground_dice

    if len(images) == 0:
        raise ValueError("the training split holds no volumes")
    keras.utils.set_random_seed(hp.seed)
    spec = (
        tf.TensorSpec((*hp.patch, images.shape[-1]), tf.float32),
        tf.TensorSpec(hp.patch, tf.int32),
    )
    data = tf.data.Dataset.from_generator(
        lambda: _patches(images, masks, hp), output_signature=spec
    )
    set_precision(hp)
    strategy = choose_strategy()  # several GPUs: MirroredStrategy, as for 2D
    data = data.batch(hp.batch_size * strategy.num_replicas_in_sync).prefetch(2)
    with strategy.scope():
        model = build_unet3d(n_classes, hp.depth, hp.width, int(images.shape[-1]))
        schedule = keras.optimizers.schedules.CosineDecay(hp.learning_rate, hp.steps, alpha=0.01)
        model.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=hp.weight_decay),
            loss=dice_ce_loss_3d,
            metrics=[keras.metrics.MeanMetricWrapper(foreground_dice, name="dice")],
        )
    epochs = max(1, min(20, hp.steps // 20))
    started = time.monotonic()
    history = model.fit(data, epochs=epochs, steps_per_epoch=hp.steps // epochs, verbose=2)
    summary = {
        "train_volumes": int(len(images)),
        "n_classes": int(n_classes),
        "train_seconds": round(time.monotonic() - started, 1),
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "parameters": int(model.count_params()),
    }
    return model, summary


def predict_volumes(model, images: np.ndarray, hp: Seg3DHParams, batch: int = 2) -> np.ndarray:
    """Sliding-window class probabilities [n, d, h, w, n_classes] (the serving graph's)."""
    import tensorflow as tf

    fn = tf.function(lambda v: sliding_window_tf(model, v, hp.patch, hp.overlap))
    return np.concatenate(
        [fn(tf.constant(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    )


def dice_per_label(pred: np.ndarray, true: np.ndarray, n_classes: int) -> list[float]:
    """Dice of each foreground label (1 .. n_classes-1) of one label map; 1.0 when a label
    is absent from both."""
    out = []
    for c in range(1, n_classes):
        p, t = pred == c, true == c
        total = int(p.sum() + t.sum())
        out.append(1.0 if total == 0 else float(2 * np.logical_and(p, t).sum() / total))
    return out
