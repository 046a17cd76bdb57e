"""3D volume benchmarks (issue 19).

``--part dice``: the hippocampus NIfTI volumes prepared as ``medflow import-nifti`` +
ingestion prepare them (``VolumeSpec``: 1 mm, 48x64x48 grid, per-volume percentile
normalisation), split 80/20 by the hash of each volume's pseudonym (benchmark key), the
3D U-Net trained on patches (``fit_volumes``, what the Trainer runs) and the eval split
predicted with the sliding window of the serving graph; Dice per label on the source grid.

``--part windows``: seconds per volume of the batched sliding window (``sliding_window_tf``,
the serving graph's) vs a bare Python loop calling the model on each patch
(``sliding_window_numpy``), same model, same volumes, and their largest difference.

``--part adrenal``: AdrenalMNIST3D 28^3, the classification task's 3D CNN
(``components/tasks/classification/volumes.py``, what the Trainer runs: flips, 90-degree
turns, balanced class weights) trained on train, AUC and ACC on val.

``--part assembly``: series -> volume (``components.dicom.volume.assemble_series``) on the
brain-tumour and hippocampus DICOM series, seconds per series, next to SimpleITK's
ImageSeriesReader on the same files when SimpleITK is installed (optional, benchmark only:
``pip install SimpleITK``) and the largest difference in slice origins between the two.

    .venv/bin/python benchmarks/volumes.py --part dice --steps 400
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(
    os.environ.get("MEDFLOW_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
KEY = b"medflow-benchmark-key-volumes-19"


def load_hippocampus(limit: int | None = None):
    """(names, prepared volumes, splits) of the labelled hippocampus volumes."""
    from medflow.components.dicom.keys import DeidKey
    from medflow.components.ingest.nifti import load_nifti, stem
    from medflow.components.ingest.nifti_import import volume_id
    from medflow.components.ingest.plan import assign_split
    from medflow.components.ingest.volume_spec import VolumeSpec, prepare

    key = DeidKey(KEY)
    spec = VolumeSpec((1.0, 1.0, 1.0), (48, 64, 48))
    files = sorted((DATA / "hippocampus" / "imagesTr").glob("*.nii.gz"))[:limit]
    out = []
    for f in files:
        image = load_nifti(f)
        mask = load_nifti(DATA / "hippocampus" / "labelsTr" / f.name, mask=True)
        split = assign_split(volume_id(key, stem(f.name)), (("train", 0.8), ("eval", 0.2)))
        out.append(
            (f.name, prepare(image.voxels, image.affine, spec, mask.voxels), mask.voxels, split)
        )
    return out


def part_dice(args) -> dict:
    from medflow.components.ingest.volume_spec import restore
    from medflow.components.tasks.segmentation.volumes import (
        Seg3DHParams,
        dice_per_label,
        fit_volumes,
        predict_volumes,
    )

    data = load_hippocampus(args.limit)
    train = [d for d in data if d[3] == "train"]
    evals = [d for d in data if d[3] == "eval"]
    hp = Seg3DHParams(steps=args.steps, width=args.width, batch_size=args.batch)
    images = np.stack([d[1].image[..., None] for d in train])
    masks = np.stack([d[1].mask for d in train])
    model, summary = fit_volumes(images, masks, 3, hp)
    started = time.monotonic()
    probs = predict_volumes(model, np.stack([d[1].image[..., None] for d in evals]), hp)
    infer = (time.monotonic() - started) / len(evals)
    scores = []
    for (_, prep, source_mask, _), p in zip(evals, probs, strict=True):
        label = restore(
            np.argmax(p, -1).astype(np.uint8),
            prep.offset,
            prep.resampled_shape,
            prep.source_shape,
            prep.orientation,
        )
        scores.append(dice_per_label(label, source_mask, 3))
    mean = np.mean(scores, axis=0)
    return {
        "train_volumes": len(train),
        "eval_volumes": len(evals),
        "hparams": hp.to_dict(),
        "train_minutes": round(summary["train_seconds"] / 60, 2),
        "infer_seconds_per_volume": round(infer, 3),
        "dice_anterior": round(float(mean[0]), 4),
        "dice_posterior": round(float(mean[1]), 4),
        "dice_mean": round(float(mean.mean()), 4),
    }


def part_windows(args) -> dict:
    import tensorflow as tf

    from medflow.components.models.unet3d import build_unet3d
    from medflow.components.tasks.segmentation.windows import (
        sliding_window_numpy,
        sliding_window_tf,
    )

    data = load_hippocampus(args.limit or 8)
    volumes = np.stack([d[1].image[..., None] for d in data])
    model = build_unet3d(3, 3, args.width)
    patch = (32, 32, 32)
    graph = tf.function(lambda v: sliding_window_tf(model, v, patch))
    graph(tf.constant(volumes[:1]))  # trace
    predict = tf.function(lambda x: model(x, training=False))
    predict(tf.constant(volumes[:1, :32, :32, :32]))
    t0 = time.monotonic()
    batched = np.concatenate([graph(tf.constant(v[None])).numpy() for v in volumes])
    t1 = time.monotonic()
    looped = np.stack(
        [sliding_window_numpy(lambda x: predict(tf.constant(x)).numpy(), v, patch) for v in volumes]
    )
    t2 = time.monotonic()
    return {
        "volumes": len(volumes),
        "grid": list(volumes.shape[1:4]),
        "graph_seconds_per_volume": round((t1 - t0) / len(volumes), 3),
        "loop_seconds_per_volume": round((t2 - t1) / len(volumes), 3),
        "max_abs_difference": float(np.max(np.abs(batched - looped))),
    }


def part_adrenal(args) -> dict:
    """AdrenalMNIST3D (28^3): the classification task's 3D fit (``fit_volume_classifier``,
    what the Trainer runs) on train, AUC / ACC on val (no tuning on val: fixed recipe; the
    official test split is not here). Voxels 0..255 -> 0..1 as import-npz's window does."""
    from medflow.components.tasks.classification.volumes import (
        Cls3DHParams,
        auc_and_accuracy,
        fit_volume_classifier,
    )

    data = np.load(DATA / "adrenalmnist3d_trainval.npz")
    x_train = data["train_images"][..., None].astype(np.float32) / 255.0
    y_train = data["train_labels"].reshape(-1).astype(np.int64)
    x_val = data["val_images"][..., None].astype(np.float32) / 255.0
    y_val = data["val_labels"].reshape(-1).astype(np.int64)
    hp = Cls3DHParams(epochs=args.epochs, width=args.width, seed=args.seed)
    model, summary = fit_volume_classifier(x_train, y_train, 2, hp)
    scores = auc_and_accuracy(model.predict(x_val, verbose=0), y_val)
    return {"val": len(x_val), "hparams": hp.to_dict(), **summary, **scores}


def _sitk_read(files):
    """The series through SimpleITK's ImageSeriesReader, files in its own (GDCM) order."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    folder = str(files[0].parent)
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder))
    return reader.Execute()


def _sitk_agrees(ours, image) -> float:
    """Largest distance (mm) between our first/last slice origins and SimpleITK's."""
    theirs = {tuple(np.round(image.TransformIndexToPhysicalPoint((0, 0, k)), 3))
              for k in (0, image.GetSize()[2] - 1)}  # fmt: skip
    mine = [ours.slice_positions()[0], ours.slice_positions()[-1]]
    return float(max(min(np.linalg.norm(np.array(t) - m) for t in theirs) for m in mine))


def part_assembly(args) -> dict:
    """Series -> volume with ours (checks + highdicom) and, when installed, SimpleITK's
    ImageSeriesReader (no checks of ours), seconds per series, and the largest difference
    between the two in slice origin (mm)."""
    from medflow.components.dicom.volume import assemble_series

    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        sitk_ok = False
    else:
        sitk_ok = True
    folders = sorted(p for p in (DATA / "brain_tumor_progression").glob("*/*/*") if p.is_dir())
    folders += sorted(p for p in (DATA / "hippocampus" / "dicom_unlabeled").iterdir() if p.is_dir())
    times, sitk_times, differences = {}, {}, {}
    for folder in folders:
        files = sorted(folder.glob("*.dcm"))
        t0 = time.monotonic()
        for _ in range(args.repeat):
            ours = assemble_series(files)
        times[folder.name] = round((time.monotonic() - t0) / args.repeat, 3)
        if sitk_ok:
            t0 = time.monotonic()
            for _ in range(args.repeat):
                image = _sitk_read(files)
            sitk_times[folder.name] = round((time.monotonic() - t0) / args.repeat, 3)
            differences[folder.name] = round(_sitk_agrees(ours, image), 4)
    return {
        "seconds_per_series": times,
        "simpleitk_seconds_per_series": sitk_times or "SimpleITK not installed: not timed",
        "largest_slice_origin_difference_mm": differences,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", choices=("dice", "windows", "assembly", "adrenal"), default="assembly"
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="first N volumes only")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20, help="--part adrenal")
    parser.add_argument("--seed", type=int, default=42, help="--part adrenal")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    result = {"part": args.part, **globals()[f"part_{args.part}"](args)}
    result["load_1_5_15_before_after"] = [load_before, os.getloadavg()]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
