"""The Trainer's per-epoch progress reaches the console of a local run (issue 24, item 7):
the real training loop (:func:`fit`) logs one line per epoch, and the run's progress tracker
(the one LocalDagRunner's absl records go through) prints it as the epoch ends."""

from __future__ import annotations

import logging

import numpy as np

from medflow.components.models.hparams import HParams
from medflow.components.models.progress import epoch_line
from medflow.pipelines.progress import ProgressTracker


def test_epoch_line_names_every_metric():
    line = epoch_line(3, 20, {"loss": 0.31204, "val_auc": 0.97, "learning_rate": 0.001}, 12.4)
    assert line == "epoch 3/20: loss 0.3120, val_auc 0.9700 (12 s)"


def test_fit_prints_one_line_per_epoch_through_the_tracker():
    import tensorflow as tf

    from medflow.components.models.training import fit

    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    labels = (np.arange(32) % 2).astype("int64")
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    hp = HParams(image_size=(8, 8), epochs=2, batch_size=16, width=4, patience=0, augment=False)
    said: list[str] = []
    tracker = ProgressTracker(said.append)
    absl = logging.getLogger("absl")
    absl.addHandler(tracker)
    level = absl.level
    absl.setLevel(logging.INFO)
    try:
        fit(hp, data, data)
    finally:
        absl.removeHandler(tracker)
        absl.setLevel(level)
    epochs = [line.strip() for line in said if "epoch" in line]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("loss" in line and "val_loss" in line for line in epochs)
