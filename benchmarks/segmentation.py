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

    from components.models import features as F

    images, masks, spacing, hc = [], [], [], []
    for shard in sorted((out / split).glob("data_tfrecord-*.gz")):
        for raw in tf.data.TFRecordDataset(str(shard), compression_type="GZIP"):
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            images.append(np.frombuffer(f[F.IMAGE].bytes_list.value[0], "<f4").reshape(size, size))
            masks.append(np.frombuffer(f[F.MASK].bytes_list.value[0], np.uint8).reshape(size, size))
            spacing.append(tuple(f[F.PIXEL_SPACING].float_list.value))
            hc.append(f["hc_mm"].float_list.value[0])
    return np.stack(images)[..., None], np.stack(masks).astype("float32"), spacing, np.array(hc)


def prepare(size: int, work: Path):
    from components.dicom.deid import DeidKey
    from components.dicom.hc18_import import import_hc18
    from components.dicom.ingest import IngestOptions, ingest
    from components.dicom.manifest import read_manifest
    from components.dicom.pixels import PixelSpec

    manifest = import_hc18(SHARED / "hc18", work / "hc18")
    options = IngestOptions(pixel=PixelSpec(size=(size, size)), workers=2)
    report = ingest(
        work / "hc18" / "dicom", work / "ex", DeidKey(b"benchmark-key-0123456789"),
        read_manifest(manifest), options,
    )  # fmt: skip
    train, test = load_split(work / "ex", "train", size), load_split(work / "ex", "eval", size)
    mean, std = train[0].mean(), train[0].std()
    train = ((train[0] - mean) / std, *train[1:])
    test = ((test[0] - mean) / std, *test[1:])
    return train, test, report.counts


def trainer_run(hp, train, val):
    import tensorflow as tf

    from components.models.segmentation import fit

    t0 = time.perf_counter()
    model, history, n = fit(
        hp,
        tf.data.Dataset.from_tensor_slices(train[:2]),
        tf.data.Dataset.from_tensor_slices(val[:2]),
    )
    return model, history, time.perf_counter() - t0


def bare_run(hp, train, val):
    import keras

    from components.models.unet import build_unet, dice_ce_loss

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

    from components.models.seg_metrics import dice, ellipse_circumference_mm, hausdorff95_mm, iou

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--speed-epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()

    from components.models.segmentation import SegHParams

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
