"""Transformed volume examples (:func:`components.models.preprocessing.volume_passthrough`)
read into memory: the 3D Trainers of every task train on arrays (volumes are few and
large; patches or augmented copies are drawn from memory)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from medflow.components.models.training import transformed_files
from medflow.core import features


@dataclass
class VolumeArrays:
    """``images`` [n, d, h, w, 1] float32, ``masks`` [n, d, h, w] uint8 or None, ``labels``
    [n] int64 or None (a class per volume), ``spec`` the VolumeSpec (JSON form) the grids
    were made with at ingestion (empty for examples written before it was recorded)."""

    images: np.ndarray
    masks: np.ndarray | None
    labels: np.ndarray | None
    spec: dict = field(default_factory=dict)


def is_volume_transform(tft_output) -> bool:
    """True when the Transform passed volume examples through (preprocessing.volume_passthrough)."""
    return features.VOLUME_AFFINE in tft_output.raw_feature_spec()


def read_volume_examples(file_pattern, tft_output) -> VolumeArrays:
    """Transformed volume examples -> arrays; every volume must be on one grid."""
    import tensorflow as tf

    files = transformed_files(file_pattern)
    spec = tft_output.transformed_feature_spec()
    names = (features.IMAGE, features.MASK, features.IMAGE_SHAPE, features.LABEL)
    keys = [k for k in (*names, features.VOLUME_SPEC) if k in spec]
    images, masks, labels, specs = [], [], [], set()
    for raw in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        ex = tf.io.parse_single_example(raw, {k: spec[k] for k in keys})
        shape = [int(v) for v in ex[features.IMAGE_SHAPE].numpy().reshape(-1)]
        images.append(np.frombuffer(_bytes(ex[features.IMAGE]), "<f4").reshape(shape))
        if features.MASK in ex:
            masks.append(np.frombuffer(_bytes(ex[features.MASK]), np.uint8).reshape(shape[:3]))
        if features.LABEL in ex:
            labels.append(int(ex[features.LABEL].numpy().reshape(-1)[0]))
        if features.VOLUME_SPEC in ex:
            specs.add(_bytes(ex[features.VOLUME_SPEC]).decode())
    if not images:
        raise ValueError(f"no transformed volume examples match {file_pattern!r}")
    grids = {im.shape for im in images}
    if len(grids) != 1:
        raise ValueError(
            f"volume examples on several grids {sorted(grids)}: ingest with one volume_spec.json"
        )
    if len(specs) > 1:
        raise ValueError(f"volume examples made with several volume specs {sorted(specs)}")
    return VolumeArrays(
        np.stack(images),
        np.stack(masks) if len(masks) == len(images) else None,
        np.asarray(labels, np.int64) if len(labels) == len(images) else None,
        json.loads(specs.pop()) if specs else {},
    )


def _bytes(tensor) -> bytes:
    """The one bytes value of a string tensor (never through numpy's fixed-width strings,
    which drop trailing zero bytes: float zeros at the end of a volume)."""
    value = tensor.numpy()
    return value if isinstance(value, bytes) else value.reshape(-1).tolist()[0]


class GridModel:
    """A serving model over raw grid bytes: decode the normalised grid written at ingestion,
    then ``forward(net, volumes)`` (what :class:`components.models.export.ServingModule`
    calls; the task gives ``forward``: the network itself, or a sliding window)."""

    def __init__(self, net, grid: tuple[int, ...], forward=None):
        self.net = net
        self.grid = tuple(int(v) for v in grid)
        self.forward = forward
        self.variables = net.variables
        self.name = net.name

    def __call__(self, image_bytes, training: bool = False):
        from medflow.components.models.preprocessing import decode_image

        volumes = decode_image(image_bytes, self.grid)
        if self.forward is None:
            return self.net(volumes, training=False)
        return self.forward(self.net, volumes)
