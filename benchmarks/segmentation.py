"""HC18 segmentation: the pipeline's Trainer code vs a bare Keras loop, and test quality.

HC18 -> DICOM + masks (``import_hc18``, split by fetus) -> ingestion (masks resampled with
the image geometry) -> arrays z-scored with the training mean/std (what the Transform
does). Then, in one process on the same data:

1. throughput: ``components.models.segmentation.fit`` (the Trainer's loop: tf.data,
   augmentation, AdamW + cosine, validation) vs ``model.fit`` on NumPy arrays with the
   same U-Net and loss and no augmentation, both for ``--speed-epochs`` epochs;
2. quality: the Trainer's loop for ``--epochs`` epochs on all train-split fetuses, then
   Dice, IoU, HD95 (mm) on the eval split (fetuses never seen in training) and the
   head-circumference error in mm (ellipse fitted to the predicted mask at input
   resolution, against the CSV's reference HC).

    .venv/bin/python benchmarks/segmentation.py [--size 128] [--epochs 40] [--width 16]

``--dataset sunnybrook``: Sunnybrook cardiac MRI (96 frames of 5 patients with expert LV
endocardium contours) -> ``import_sunnybrook`` (original DICOM files, i-contour files as the
``mask`` column) -> ingestion (contours filled on each instance's grid, resampled with the
image geometry) -> leave-one-patient-out: for each held-out patient, the Trainer's loop on
the other four patients, then Dice, IoU and HD95 (mm) of the LV blood pool on every frame
of the held-out patient (never seen in training). No throughput pair here.

    .venv/bin/python benchmarks/segmentation.py --dataset sunnybrook [--test-patients SCD0000501]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_split(out: Path, split: str, size: int):
    import numpy as np
    import tensorflow as tf

    from medflow.core import features as F

    images, masks, spacing, hc = [], [], [], []
    for shard in sorted((out / split).glob("data_tfrecord-*.gz")):
        for raw in tf.data.TFRecordDataset(str(shard), compression_type="GZIP"):
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            images.append(np.frombuffer(f[F.IMAGE].bytes_list.value[0], "<f4").reshape(size, size))
            masks.append(np.frombuffer(f[F.MASK].bytes_list.value[0], np.uint8).reshape(size, size))
            spacing.append(tuple(f[F.PIXEL_SPACING].float_list.value))
            hc.append(f["hc_mm"].float_list.value[0])
    return np.stack(images)[..., None], np.stack(masks).astype("float32"), spacing, np.array(hc)


def ingest_import(imported: Path, manifest: Path, out: Path, size: int):
    """Ingests an ``import-*`` folder's DICOM with its manifest at ``size`` x ``size``."""
    from medflow.components.dicom.deid import DeidKey
    from medflow.components.ingest.engine import IngestOptions, ingest
    from medflow.components.ingest.manifest import read_manifest
    from medflow.core.pixel_spec import PixelSpec

    options = IngestOptions(pixel=PixelSpec(size=(size, size)), workers=2)
    key = DeidKey(b"benchmark-key-0123456789")
    return ingest(imported / "dicom", out, key, read_manifest(manifest), options)


def prepare(size: int, work: Path):
    from medflow.components.ingest.hc18_import import import_hc18

    manifest = import_hc18(SHARED / "hc18", work / "hc18")
    report = ingest_import(work / "hc18", manifest, work / "ex", size)
    train, test = load_split(work / "ex", "train", size), load_split(work / "ex", "eval", size)
    mean, std = train[0].mean(), train[0].std()
    train = ((train[0] - mean) / std, *train[1:])
    test = ((test[0] - mean) / std, *test[1:])
    return train, test, report.counts


def trainer_run(hp, train, val):
    import tensorflow as tf

    from medflow.components.tasks.segmentation.trainer import fit

    t0 = time.perf_counter()
    model, history, n = fit(
        hp,
        tf.data.Dataset.from_tensor_slices(train[:2]),
        tf.data.Dataset.from_tensor_slices(val[:2]),
    )
    return model, history, time.perf_counter() - t0


def bare_run(hp, train, val):
    import keras

    from medflow.components.tasks.segmentation.unet import build_unet, dice_ce_loss

    keras.utils.set_random_seed(hp.seed)
    model = build_unet(hp.input_shape, hp.depth, hp.width)
    model.compile(optimizer=keras.optimizers.Adam(hp.learning_rate), loss=dice_ce_loss)
    t0 = time.perf_counter()
    model.fit(
        train[0], train[1], batch_size=hp.batch_size, epochs=hp.epochs,
        validation_data=val[:2], verbose=2, shuffle=True,
    )  # fmt: skip
    return time.perf_counter() - t0


def evaluate(model, test, size: int) -> dict:
    import numpy as np

    from medflow.components.tasks.segmentation.metrics import (
        dice,
        ellipse_circumference_mm,
        hausdorff95_mm,
        iou,
    )

    probs = np.asarray(model.predict(test[0], batch_size=16, verbose=0))
    rows = []
    for p, m, sp, ref in zip(probs >= 0.5, test[1] > 0, test[2], test[3], strict=True):
        hc = ellipse_circumference_mm(p, sp)
        rows.append((dice(p, m), iou(p, m), hausdorff95_mm(p, m, sp), abs(hc - ref)))
    values = np.array(rows)
    return {
        "test_images": len(rows),
        "dice_mean": float(values[:, 0].mean()),
        "dice_median": float(np.median(values[:, 0])),
        "iou_mean": float(values[:, 1].mean()),
        "hd95_mm_mean": float(values[:, 2].mean()),
        "hc_abs_error_mm_mean": float(values[:, 3].mean()),
        "hc_abs_error_mm_median": float(np.median(values[:, 3])),
    }


def load_all(out: Path, size: int) -> dict:
    """Every ingested example (all splits): image, mask, spacing, patient pseudonym, phase."""
    import numpy as np
    import tensorflow as tf

    from medflow.core import features as F

    rows = {"image": [], "mask": [], "spacing": [], "patient": [], "phase": []}
    for shard in sorted(out.glob("*/data_tfrecord-*.gz")):
        for raw in tf.data.TFRecordDataset(str(shard), compression_type="GZIP"):
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            rows["image"].append(
                np.frombuffer(f[F.IMAGE].bytes_list.value[0], "<f4").reshape(size, size)
            )
            rows["mask"].append(
                np.frombuffer(f[F.MASK].bytes_list.value[0], np.uint8).reshape(size, size)
            )
            rows["spacing"].append(tuple(f[F.PIXEL_SPACING].float_list.value))
            rows["patient"].append(f[F.PATIENT_ID].bytes_list.value[0].decode())
            rows["phase"].append(f["phase"].bytes_list.value[0].decode())
    return {
        "image": np.stack(rows["image"])[..., None],
        "mask": np.stack(rows["mask"]).astype("float32"),
        "spacing": rows["spacing"],
        "patient": np.array(rows["patient"]),
        "phase": np.array(rows["phase"]),
    }


def prepare_sunnybrook(size: int, work: Path) -> tuple[dict, dict]:
    """Import + ingest Sunnybrook; patients named by their source folder (from the report)."""
    import numpy as np

    from medflow.components.ingest.sunnybrook_import import import_sunnybrook

    manifest = import_sunnybrook(SHARED / "sunnybrook", work / "sunnybrook")
    report = ingest_import(work / "sunnybrook", manifest, work / "ex", size)
    folder = {f["patient_id"]: f["path"].split("/")[0] for f in report.files if "patient_id" in f}
    data = load_all(work / "ex", size)
    data["patient"] = np.array([folder[p] for p in data["patient"]])
    return data, report.counts


def evaluate_masks(model, images, masks, spacing) -> list[tuple[float, float, float]]:
    """Per image (Dice, IoU, HD95 mm) of the thresholded prediction against the mask."""
    import numpy as np

    from medflow.components.tasks.segmentation.metrics import dice, hausdorff95_mm, iou

    probs = np.asarray(model.predict(images, batch_size=16, verbose=0))
    if probs.ndim == 4:
        probs = probs[..., 0]
    return [
        (dice(p, m), iou(p, m), hausdorff95_mm(p, m, sp))
        for p, m, sp in zip(probs >= 0.5, masks > 0, spacing, strict=True)
    ]


def run_sunnybrook(args: argparse.Namespace) -> dict:
    """Leave-one-patient-out U-Net training and LV Dice/IoU/HD95 on the held-out patient."""
    import numpy as np

    from medflow.components.tasks.segmentation.trainer import SegHParams

    work = Path(tempfile.mkdtemp(prefix="seg-bench-sunnybrook-"))
    t0 = time.perf_counter()
    data, counts = prepare_sunnybrook(args.size, work)
    patients = sorted(set(data["patient"].tolist()))
    print(f"data: {len(data['image'])} frames of {len(patients)} patients, "
          f"{time.perf_counter() - t0:.1f}s")  # fmt: skip
    base = dict(image_size=args.size, depth=args.depth, width=args.width, batch_size=args.batch)
    hp = SegHParams.from_config({**base, "epochs": args.epochs})
    folds, all_rows, all_phases, per_frame = [], [], [], []
    held_outs = args.test_patients.split(",") if args.test_patients else patients
    unknown = sorted(set(held_outs) - set(patients))
    if unknown:
        raise SystemExit(f"--test-patients: {', '.join(unknown)} not among {', '.join(patients)}")
    for held_out in held_outs:
        test = data["patient"] == held_out
        train_x, test_x = data["image"][~test], data["image"][test]
        mean, std = train_x.mean(), train_x.std()  # train statistics only, as the Transform
        train = ((train_x - mean) / std, data["mask"][~test])
        val = ((test_x - mean) / std, data["mask"][test])
        # The held-out patient is validation data for monitoring only (no early stopping).
        model, history, train_s = trainer_run(hp, train, val)
        spacing = [s for s, t in zip(data["spacing"], test, strict=True) if t]
        rows = evaluate_masks(model, val[0], val[1], spacing)
        values = np.array(rows)
        folds.append(
            {
                "test_patient": held_out,
                "train_frames": int((~test).sum()),
                "test_frames": int(test.sum()),
                "train_seconds": round(train_s, 1),
                "dice_mean": float(values[:, 0].mean()),
                "iou_mean": float(values[:, 1].mean()),
                "hd95_mm_mean": float(values[:, 2].mean()),
                "last_train_dice": history.get("dice", [None])[-1],
            }
        )
        print(json.dumps(folds[-1]))
        all_rows += rows
        all_phases += data["phase"][test].tolist()
        per_frame += [
            {"patient": held_out, "phase": ph, "dice": round(r[0], 4), "hd95_mm": round(r[2], 2)}
            for ph, r in zip(data["phase"][test].tolist(), rows, strict=True)
        ]
    values, phases = np.array(all_rows), np.array(all_phases)
    return {
        "dataset": "sunnybrook",
        "protocol": "leave-one-patient-out"
        + ("" if held_outs == patients else f" (held out: {', '.join(held_outs)})"),
        "hparams": hp.to_dict(),
        "parameters": int(model.count_params()),
        "ingest": counts,
        "folds": folds,
        "test_frames": len(all_rows),
        "dice_mean": float(values[:, 0].mean()),
        "dice_median": float(np.median(values[:, 0])),
        "dice_mean_of_folds": float(np.mean([f["dice_mean"] for f in folds])),
        "iou_mean": float(values[:, 1].mean()),
        "hd95_mm_mean": float(values[:, 2].mean()),
        "dice_mean_by_phase": {
            ph: float(values[phases == ph, 0].mean()) for ph in sorted(set(all_phases))
        },
        "train_seconds_total": round(sum(f["train_seconds"] for f in folds), 1),
        "per_frame": per_frame,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--speed-epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--dataset", choices=("hc18", "sunnybrook"), default="hc18")
    parser.add_argument(
        "--test-patients",
        metavar="IDS",
        help="sunnybrook: comma-separated patient folders held out one at a time "
        "(default: every patient once, leave-one-patient-out)",
    )
    args = parser.parse_args()
    if args.dataset == "sunnybrook":
        result = run_sunnybrook(args)
        print(json.dumps({k: v for k, v in result.items() if k != "per_frame"}, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return

    from medflow.components.tasks.segmentation.trainer import SegHParams

    work = Path(tempfile.mkdtemp(prefix="seg-bench-"))
    t0 = time.perf_counter()
    train, test, counts = prepare(args.size, work)
    prep_s = time.perf_counter() - t0
    n_train = len(train[0])
    print(f"data: {n_train} train / {len(test[0])} test images (split by fetus), {prep_s:.1f}s")
    base = dict(image_size=args.size, depth=args.depth, width=args.width, batch_size=args.batch)
    speed = SegHParams.from_config({**base, "epochs": args.speed_epochs})
    _, _, trainer_s = trainer_run(speed, train, test)
    bare_s = bare_run(speed, train, test)
    trainer_ips = n_train * args.speed_epochs / trainer_s
    bare_ips = n_train * args.speed_epochs / bare_s
    print(f"throughput: trainer {trainer_ips:.1f} img/s, bare {bare_ips:.1f} img/s")

    # The test split is passed as validation data for monitoring only (no early stopping).
    hp = SegHParams.from_config({**base, "epochs": args.epochs})
    model, history, train_s = trainer_run(hp, train, test)
    quality = evaluate(model, test, args.size)
    result = {
        "hparams": hp.to_dict(),
        "parameters": int(model.count_params()),
        "ingest": counts,
        "train_images": n_train,
        "throughput_img_s": {
            "trainer": trainer_ips,
            "bare_keras": bare_ips,
            "ratio_trainer_over_bare": trainer_ips / bare_ips,
        },  # fmt: skip
        "train_seconds": train_s,
        "last_val_dice": history.get("val_dice", [None])[-1],
        **quality,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
