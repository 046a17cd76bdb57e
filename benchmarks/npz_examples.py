"""MedMNIST ``.npz`` -> tf.Example TFRecords in the ingestion feature contract.

Used by the ``tfrecord`` input of :func:`pipelines.pipeline.create_pipeline`
(ImportExampleGen) and by benchmarks, so the pipeline can run on the npz datasets
without the DICOM round trip. Values match what DICOM ingestion writes for an 8-bit
MONOCHROME2 image with no window: the stored grey levels as float32.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from medflow.components.dicom.pixels import image_stats
from medflow.components.ingest.examples import to_tf_example
from medflow.core import features as F
from medflow.core.errors import InputError

DEFAULT_SPLITS = {"train": "train", "eval": "val"}


def load_npz_split(npz_path: str | Path, split: str, limit: int | None = None):
    """Images float32 [N, rows, cols, 1] and labels int64 [N] of one npz split."""
    with np.load(npz_path) as data:
        key = f"{split}_images"
        if key not in data:
            raise InputError(
                f"{npz_path}: no array {key!r} (found {sorted(data.files)}); "
                "pass a MedMNIST-style npz with <split>_images/<split>_labels"
            )
        images = data[key][:limit].astype(np.float32)
        labels = data[f"{split}_labels"][:limit].reshape(-1).astype(np.int64)
    if images.ndim == 3:
        images = images[..., None]
    return images, labels


def make_example(image: np.ndarray, label: int, uid: str, modality: str, site: str):
    """One tf.Example with every feature of the contract (header strings UNKNOWN), built by
    ingestion's own builder."""
    image = np.ascontiguousarray(image, dtype="<f4")
    rows, cols, channels = image.shape
    header = {name: F.UNKNOWN for name in F.HEADER_STRINGS}
    header.update({F.MODALITY: modality, F.SITE: site, F.PHOTOMETRIC: "MONOCHROME2"})
    feats = {
        F.IMAGE: image.tobytes(),
        F.IMAGE_SHAPE: [rows, cols, channels],
        F.IMAGE_DTYPE: b"float32",
        **{name: float(value) for name, value in image_stats(image).items()},
        F.FRAME_INDEX: 0,
        F.ORIG_ROWS: rows,
        F.ORIG_COLS: cols,
        F.N_FRAMES: 1,
        F.PIXEL_SPACING: [],
        F.RESAMPLE_SCALE: 1.0,
        F.RESAMPLE_PAD: [0, 0],
        F.LABEL: int(label),
        **header,
    }
    for name in F.IDENTIFIERS:
        feats[name] = hashlib.sha256(f"{name}:{uid}".encode()).hexdigest()[:16].encode()
    return to_tf_example(feats)


def write_npz_examples(
    npz_path: str | Path,
    out_dir: str | Path,
    splits: dict[str, str] | None = None,
    limit: int | None = None,
    modality: str = "OT",
    site: str = "medmnist",
) -> dict[str, int]:
    """Write ``<out_dir>/<split>/data.tfrecord.gz`` for each pipeline split.

    Args:
        npz_path: MedMNIST npz file.
        out_dir: destination; each split file is written to a temp name then renamed.
        splits: pipeline split name -> npz split name (default train->train, eval->val).
        limit: keep only the first ``limit`` images of each split (small test runs).
        modality: value of the ``modality`` header feature.
        site: value of the ``site`` slicing feature.

    Returns:
        Number of examples written per pipeline split.
    """
    import tensorflow as tf

    counts = {}
    stem = Path(npz_path).stem
    for split, npz_split in (splits or DEFAULT_SPLITS).items():
        images, labels = load_npz_split(npz_path, npz_split, limit)
        split_dir = Path(out_dir) / split
        split_dir.mkdir(parents=True, exist_ok=True)
        final = split_dir / "data.tfrecord.gz"
        tmp = split_dir / ".data.tfrecord.gz.tmp"
        with tf.io.TFRecordWriter(str(tmp), options="GZIP") as writer:
            for i, (image, label) in enumerate(zip(images, labels, strict=True)):
                example = make_example(image, label, f"{stem}/{npz_split}/{i}", modality, site)
                writer.write(example.SerializeToString())
        os.replace(tmp, final)
        counts[split] = len(labels)
    return counts
