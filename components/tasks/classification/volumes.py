"""3D classification: the classification task's volume mode. When the examples are volumes
(``medflow import-npz`` on (N, D, H, W) arrays, or any volume folder with a ``label``
column) the Trainer trains a small 3D CNN (:mod:`components.models.cnn3d`) on the volumes
held in memory, with flips and 90-degree turns as augmentation and balanced class weights,
and exports it behind the same classification head as 2D (``probabilities``, ``class_id``,
``score``, class names), so TFMA, the contract checks and ``medflow predict --json`` work
as for 2D.

``serving_default`` takes ``image`` float32 [None, d, h, w, 1] (the normalised grid written
at ingestion). ``benchmarks/volumes.py --part adrenal`` calls :func:`fit_volume_classifier`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
PREFIX = "cls3d_"


@dataclasses.dataclass(frozen=True)
class Cls3DHParams:
    """What 3D classification training needs besides the data (``cls3d_`` prefixed keys of
    the Trainer's custom_config).

    Attributes:
        epochs, batch_size: passes over the training volumes, volumes per step.
        width, stages, dropout: the 3D CNN (first-stage channels, conv stages).
        learning_rate, weight_decay: AdamW, cosine decay over all steps.
        class_weight: "balanced" (each class weighs the same in the loss) or "none".
        turns: random 90-degree turns in each axis plane besides the flips.
        seed: weights, shuffling and augmentation.
    """

    epochs: int = 20
    batch_size: int = 16
    width: int = 8
    stages: int = 3
    dropout: float = 0.3
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    class_weight: str = "balanced"
    turns: bool = True
    seed: int = 42

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Cls3DHParams:
        """From a Trainer custom_config (``cls3d_`` keys); a bad value raises naming it."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in dict(config or {}).items():
            name = key[len(PREFIX) :]
            if key.startswith(PREFIX) and name in fields:
                default = getattr(cls, name)
                kind = type(default)
                if kind is bool and isinstance(value, str):
                    value = value.strip().lower() in ("1", "true", "yes")
                kwargs[name] = kind(value)
        hp = cls(**kwargs)
        if min(hp.epochs, hp.batch_size, hp.width, hp.stages) < 1:
            raise ValueError("cls3d_epochs, cls3d_batch_size, cls3d_width, cls3d_stages: >= 1")
        if hp.class_weight not in ("balanced", "none"):
            raise ValueError(f"cls3d_class_weight {hp.class_weight!r}: balanced or none")
        return hp

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def augment_tf(volume, seed_pair, turns: bool):
    """One volume [d, h, w, 1] flipped along each axis at random and (``turns``) turned by a
    random multiple of 90 degrees in a random axis plane (stateless: same seed, same copy)."""
    import tensorflow as tf

    draws = tf.random.stateless_uniform([5], seed_pair)
    for axis in range(3):
        volume = tf.cond(
            draws[axis] < 0.5, lambda a=axis, v=volume: tf.reverse(v, [a]), lambda v=volume: v
        )
    if not turns or volume.shape[0] != volume.shape[1] or volume.shape[1] != volume.shape[2]:
        return volume
    # a cube: swapping two axes (then the flips above) gives every 90-degree turn
    perms = tf.constant([[0, 1, 2, 3], [1, 0, 2, 3], [0, 2, 1, 3], [2, 1, 0, 3]])
    perm = perms[tf.cast(draws[3] * 4, tf.int32) % 4]
    return tf.transpose(volume, perm)


def _weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes)
    return {c: float(len(labels) / (n_classes * max(n, 1))) for c, n in enumerate(counts)}


def fit_volume_classifier(images: np.ndarray, labels: np.ndarray, n_classes: int, hp):
    """Train the 3D CNN on ``images`` [n, d, h, w, 1] / ``labels`` [n]; returns (model,
    summary with the training minutes)."""
    import keras
    import tensorflow as tf

    from medflow.components.models.cnn3d import build_cnn3d

    keras.utils.set_random_seed(hp.seed)
    n = len(images)
    data = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    seeds = tf.data.Dataset.random(seed=hp.seed).batch(2)
    train = (
        tf.data.Dataset.zip((data.shuffle(n, seed=hp.seed, reshuffle_each_iteration=True), seeds))
        .map(lambda xy, s: (augment_tf(xy[0], s, hp.turns), xy[1]))
        .batch(hp.batch_size)
        .prefetch(2)
    )
    model = build_cnn3d(images.shape[1:], n_classes, hp.width, hp.stages, hp.dropout)
    steps = hp.epochs * math.ceil(n / hp.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(hp.learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=hp.weight_decay),
        loss="sparse_categorical_crossentropy",
    )
    started = time.monotonic()
    history = model.fit(
        train.repeat(),
        epochs=hp.epochs,
        steps_per_epoch=math.ceil(n / hp.batch_size),
        class_weight=_weights(labels, n_classes, hp.class_weight),
        verbose=2,
    )
    summary = {
        "train_volumes": n,
        "train_minutes": round((time.monotonic() - started) / 60, 2),
        "final_loss": round(float(history.history["loss"][-1]), 4),
        "parameters": int(model.count_params()),
    }
    return model, summary


def auc_and_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Binary: ROC AUC of p(class 1) and accuracy of the most probable class."""
    from sklearn.metrics import roc_auc_score

    out = {"accuracy": round(float(np.mean(probabilities.argmax(-1) == labels)), 4)}
    if probabilities.shape[-1] == 2 and len(set(labels.tolist())) == 2:
        out["auc"] = round(float(roc_auc_score(labels, probabilities[:, 1])), 4)
    return out


def train_volumes_and_export(fn_args, tft_output) -> dict[str, Any]:
    """The classification Trainer's work on volume examples; returns the training summary."""
    from medflow.components.models.export import save_with_transform
    from medflow.components.models.volume_examples import GridModel, read_volume_examples
    from medflow.components.tasks.classification.export import classification_head

    config = dict(fn_args.custom_config or {})
    hp = Cls3DHParams.from_config(config)
    train = read_volume_examples(fn_args.train_files, tft_output)
    if train.labels is None:
        raise ValueError("the volume examples hold no 'label': give the manifest a label column")
    n_classes = max(int(train.labels.max()) + 1, 2)
    names = list(config.get("labels") or []) or [f"class_{i}" for i in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(
            f"the labels hold classes 0..{n_classes - 1} but the class names are {names}: "
            f"pass {n_classes} names with --class-names"
        )
    net, summary = fit_volume_classifier(train.images, train.labels, n_classes, hp)
    held = read_volume_examples(fn_args.eval_files, tft_output)
    probs = net.predict(held.images, batch_size=64, verbose=0)
    info = {
        "task": "classification",
        "mode": "volume",
        "hparams": hp.to_dict(),
        "backbone": net.name,
        "grid": list(train.images.shape[1:4]),
        "volume_spec": train.spec,  # the Pusher writes it into the model contract
        "eval": auc_and_accuracy(probs, held.labels) if held.labels is not None else {},
        **summary,
    }
    log.info("3D classification: eval %s", info["eval"])
    model = GridModel(net, train.images.shape[1:])
    head = classification_head(names)
    save_with_transform(
        model, tft_output, fn_args.serving_model_dir, train.images.shape[1:], head, info
    )
    return info
