"""The segmentation Trainer on volume examples: read the transformed volumes into memory,
train the 3D U-Net on patches (:func:`.volumes.fit_volumes`), measure eval-split Dice per
label with the sliding window, export the SavedModel with the window inside.

``serving_default`` takes ``image`` float32 [None, d, h, w, 1] (the normalised grid written
at ingestion) and returns ``probabilities`` [None, d, h, w, n_classes] and ``mask`` uint8
[None, d, h, w] (the most probable class per voxel).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from medflow.components.models.volume_examples import (
    GridModel,
    read_volume_examples,
)
from medflow.components.tasks.segmentation.volumes import (
    Seg3DHParams,
    dice_per_label,
    fit_volumes,
    predict_volumes,
)

log = logging.getLogger(__name__)


def read_volumes(file_pattern, tft_output) -> tuple[np.ndarray, np.ndarray | None]:
    """Transformed volume examples -> (images [n, d, h, w, 1], masks [n, d, h, w] or None)."""
    arrays = read_volume_examples(file_pattern, tft_output)
    return arrays.images, arrays.masks


def volume_model(net, grid: tuple[int, ...], hp: Seg3DHParams) -> GridModel:
    """The serving model of a volume: raw grid bytes -> decoded grid -> sliding-window
    probabilities."""
    from medflow.components.tasks.segmentation.windows import sliding_window_tf

    def window(model, volumes):
        return sliding_window_tf(model, volumes, hp.patch, hp.overlap)

    return GridModel(net, grid, window)


def volume_head(probabilities) -> dict[str, Any]:
    import tensorflow as tf

    return {"probabilities": probabilities, "mask": tf.cast(tf.argmax(probabilities, -1), tf.uint8)}


def train_volumes_and_export(fn_args, tft_output) -> dict[str, Any]:
    """The Trainer's work on volume examples; returns the training summary."""
    from medflow.components.models.export import save_with_transform

    hp = Seg3DHParams.from_config(fn_args.custom_config)
    train = read_volume_examples(fn_args.train_files, tft_output)
    images, masks = train.images, train.masks
    if masks is None:
        raise ValueError("the volume examples hold no 'mask': import with --masks")
    labels = list((fn_args.custom_config or {}).get("labels") or [])
    n_classes = max(int(masks.max()) + 1, 2)
    if n_classes > 2 and len(labels) != n_classes:
        raise ValueError(
            f"the masks hold labels 0..{n_classes - 1} but --class-names gives {labels}: pass "
            f"{n_classes} names, background first (e.g. background,anterior,posterior)"
        )
    net, summary = fit_volumes(images, masks, n_classes, hp)
    eval_images, eval_masks = read_volumes(fn_args.eval_files, tft_output)
    probs = predict_volumes(net, eval_images, hp)
    scores = [
        dice_per_label(np.argmax(p, -1), m, n_classes)
        for p, m in zip(probs, eval_masks, strict=True)
    ]
    info = {
        "task": "segmentation",
        "mode": "volume",
        "hparams": hp.to_dict(),
        "volume_spec": train.spec,  # the Pusher writes it into the model contract
        "architecture": net.name,
        "grid": list(images.shape[1:4]),
        "eval_dice_per_label_on_grid": [round(float(v), 4) for v in np.mean(scores, axis=0)],
        **summary,
    }
    log.info("3D segmentation: eval Dice per label %s", info["eval_dice_per_label_on_grid"])
    model = volume_model(net, images.shape[1:], hp)
    save_with_transform(
        model, tft_output, fn_args.serving_model_dir, images.shape[1:], volume_head, info
    )
    return info
