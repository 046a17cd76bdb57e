"""Patches for 3D training and sliding windows for 3D inference.

Training sees random patches, most centred on a foreground voxel (small structures in a
large volume otherwise rarely appear). Inference covers the volume with overlapping
windows (half a patch apart by default) and blends their probabilities with a Gaussian
weight that trusts each window's centre more than its edges (as nnU-Net does). The
windows run inside the exported serving graph, batched into one model call, so every
client, the Evaluator included, gets the same blended output;
:func:`sliding_window_numpy` is the bare per-patch loop it is checked against.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets covering ``[0, size)`` with windows of ``patch`` overlapping by at
    least ``overlap`` of a patch; the last window ends at ``size``."""
    if patch >= size:
        return [0]
    stride = max(1, int(patch * (1.0 - overlap)))
    n = -(-(size - patch) // stride) + 1
    return sorted({round(i * (size - patch) / (n - 1)) for i in range(n)})


def windows(shape, patch, overlap: float) -> list[tuple[int, int, int]]:
    return list(
        itertools.product(
            *(window_starts(s, p, overlap) for s, p in zip(shape, patch, strict=True))
        )
    )


def gaussian_weights(patch, sigma_scale: float = 0.125) -> np.ndarray:
    """A 3D Gaussian over a patch (sigma = ``sigma_scale`` x side), max 1, min > 0."""
    axes = [np.exp(-0.5 * ((np.arange(p) - (p - 1) / 2) / (sigma_scale * p)) ** 2) for p in patch]
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def sliding_window_numpy(
    predict: Callable[[np.ndarray], np.ndarray], volume: np.ndarray, patch, overlap: float = 0.5
) -> np.ndarray:
    """Reference loop: ``predict`` ([1, *patch, ch] -> [1, *patch, n]) on each window of
    ``volume`` [d, h, w, ch], Gaussian-blended -> [d, h, w, n]."""
    weight = gaussian_weights(patch)
    acc, norm = None, np.zeros(volume.shape[:3], np.float32)
    for z, y, x in windows(volume.shape[:3], patch, overlap):
        sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
        out = np.asarray(predict(volume[sl][None]))[0]
        if acc is None:
            acc = np.zeros((*volume.shape[:3], out.shape[-1]), np.float32)
        acc[sl] += out * weight[..., None]
        norm[sl] += weight
    return acc / norm[..., None]


def sliding_window_tf(model, volumes, patch, overlap: float = 0.5):
    """``volumes`` [b, d, h, w, ch] (static d, h, w) -> blended probabilities [b, d, h, w, n],
    all windows in one batched model call (a TF graph: usable inside a SavedModel)."""
    import tensorflow as tf

    shape = [int(s) for s in volumes.shape[1:4]]
    starts = windows(shape, patch, overlap)
    weight = gaussian_weights(patch)
    crops = [
        volumes[:, z : z + patch[0], y : y + patch[1], x : x + patch[2], :] for z, y, x in starts
    ]
    probs = tf.cast(model(tf.concat(crops, axis=0), training=False), tf.float32)
    parts = tf.split(probs, len(starts), axis=0)
    norm = np.zeros(shape, np.float32)
    total = 0.0
    for (z, y, x), part in zip(starts, parts, strict=True):
        pads = [
            [0, 0],
            [z, shape[0] - z - patch[0]],
            [y, shape[1] - y - patch[1]],
            [x, shape[2] - x - patch[2]],
            [0, 0],
        ]
        total += tf.pad(part * weight[None, ..., None], pads)
        norm[z : z + patch[0], y : y + patch[1], x : x + patch[2]] += weight
    return total / norm[None, ..., None]


def sample_patch(
    image: np.ndarray, mask: np.ndarray, patch, rng: np.random.Generator, foreground: float = 0.67
) -> tuple[np.ndarray, np.ndarray]:
    """One training patch of ``image`` [d, h, w, ch] and ``mask`` [d, h, w]: with
    probability ``foreground`` centred on a random foreground voxel, else anywhere."""
    shape = np.array(mask.shape)
    size = np.array(patch)
    fg = np.argwhere(mask > 0) if rng.random() < foreground else np.empty((0, 3))
    if len(fg):
        centre = fg[rng.integers(len(fg))]
        start = np.clip(
            centre - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, shape - size
        )
    else:
        start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, size, strict=True)])
    sl = tuple(slice(int(a), int(a) + int(p)) for a, p in zip(start, size, strict=True))
    return image[sl], mask[sl]
