"""Detection and localization: the detection Trainer's steps in one process, eval-split
quality and time. ``--dataset bccd`` (default): BCCD blood smears, three classes;
``--dataset hc18`` / ``sunnybrook``: localization, one box per image around the human mask
(``medflow labels boxes-from-masks``), one class, with the top-1 box's IoU (mean, spread).

BCCD (Pascal VOC) -> ``import_voc`` (colour DICOM, boxes cleaned) -> each instance through
``to_model_input`` with the pipeline's PixelSpec -> arrays z-scored with the training
mean/std (what the Transform does) -> boxes mapped onto the model grid (``boxes.py``) ->
``trainer.fit_arrays`` (the Trainer's loop) for ``--epochs`` -> the exported graph's decoding
and NMS (``export.detection_head``) on the official val split -> boxes back to source pixels
-> COCO mAP@0.5, mAP@[.5:.95], per-class AP@0.5 and FROC with pycocotools. Also in-process
inference images/s (model + decoding + NMS, batch 16).

``--grpc``: the trained detector exported as the pipeline pushes it (fixed z-score in place of
the Transform graph, NMS inside), served by ``medflow serve`` (embedded server, a process of
its own) and called over gRPC with TF Serving's ``PredictionServiceStub``, against the same
SavedModel's ``serving_default`` in this process: images/s at each ``--grpc-batches`` size on
the val images, the two interleaved (``benchmarks/serving.py``'s ``measure``), and the ratio.

The TFX pipeline (ingestion's TFRecords, Transform, Evaluator) is not in the loop here;
``tests/e2e/test_detection_e2e.py`` runs that path.

    .venv/bin/python benchmarks/detection.py [--dataset hc18] [--size 256] [--epochs 30] [--limit N]
        [--grpc [--grpc-batches 1,16] [--grpc-seconds 12]]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
# dataset -> (class names, channels): BCCD detection; HC18 / Sunnybrook localization (one box
# per image around the human mask, ``medflow labels boxes-from-masks``).
DATASETS = {"bccd": (("RBC", "WBC", "Platelets"), 3), "hc18": (("head",), 1),
            "sunnybrook": (("lv",), 1)}  # fmt: skip


def boxes_manifest(dataset: str, out: Path, limit: int | None) -> Path:
    """The dataset's ``boxes`` manifest under ``out`` (DICOM in ``out/**/dicom``)."""
    from medflow.components.ingest.mask_boxes import boxes_from_masks

    if dataset == "bccd":
        from medflow.components.ingest.voc_import import import_voc

        return import_voc(DATA / "bccd", out, classes=DATASETS["bccd"][0], limit=limit,
                          splits=("train", "eval"))  # fmt: skip
    if dataset == "hc18":
        from medflow.components.ingest.hc18_import import import_hc18

        masks = import_hc18(DATA / "hc18", out / "src", limit=limit)
    else:
        from medflow.components.ingest.sunnybrook_import import import_sunnybrook

        masks = import_sunnybrook(DATA / "sunnybrook", out / "src")
    boxes_from_masks(out / "src" / "dicom", masks, out / "boxes.csv", DATASETS[dataset][0][0])
    return out / "boxes.csv"


def load(dataset: str, out: Path, size: int, limit: int | None):
    """{split: (images [n, size, size, ch], source boxes, model-grid boxes, geometries)}."""
    import pydicom

    from medflow.components.dicom.pixels import pixel_spacing, to_model_input
    from medflow.components.ingest.mask_boxes import dicom_index
    from medflow.components.ingest.voc_import import parse_boxes
    from medflow.components.tasks.detection.boxes import boxes_array, to_model_grid
    from medflow.core.pixel_spec import PixelSpec

    classes, channels = DATASETS[dataset]
    manifest = boxes_manifest(dataset, out, limit)
    files = dicom_index(out)
    spec = PixelSpec(size=(size, size), channels=channels)
    data: dict[str, tuple[list, list, list, list]] = {}
    for row in csv.DictReader(manifest.open()):
        ds = pydicom.dcmread(files[row["SOPInstanceUID"]])
        ((arr, geom),) = to_model_input(ds, spec)
        spacing = pixel_spacing(ds)  # None for BCCD; square pixels for HC18 and Sunnybrook
        src = boxes_array(parse_boxes(row["boxes"], row["SOPInstanceUID"], classes), list(classes))
        model = (to_model_grid(src[0], geom.scale, geom.pad, spacing), src[1])
        split = data.setdefault(row["split"], ([], [], [], []))
        for part, value in zip(split, (arr, src, model, (geom, spacing)), strict=True):
            part.append(value)
    return {k: (np.stack(v[0]), v[1], v[2], v[3]) for k, v in data.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="bccd")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, help="images per split (default: all)")
    parser.add_argument("--json-out", help="also write the results here")
    parser.add_argument("--grpc", action="store_true", help="also time it served over gRPC")
    parser.add_argument("--grpc-batches", default="1,16", help="batch sizes for --grpc")
    parser.add_argument("--grpc-seconds", type=float, default=12.0, help="per batch size")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def run(args) -> dict:
    """Train on the train split, evaluate on the eval split; the results."""
    from medflow.components.tasks.detection.boxes import to_source_grid
    from medflow.components.tasks.detection.evaluation import detection_metrics, localization_iou
    from medflow.components.tasks.detection.trainer import DetHParams, fit_arrays, predict_arrays

    classes, channels = DATASETS[args.dataset]
    with tempfile.TemporaryDirectory() as tmp:
        data = load(args.dataset, Path(tmp), args.size, args.limit)
    train_x, _, train_boxes, _ = data["train"]
    val_x, val_src, _, val_geom = data["eval"]
    mean, std = float(train_x.mean()), float(train_x.std()) or 1.0
    hp = DetHParams(image_size=(args.size, args.size), channels=channels, labels=classes,
                    width=args.width, epochs=args.epochs, batch_size=args.batch_size)  # fmt: skip
    start = time.perf_counter()
    model, history = fit_arrays(hp, (train_x - mean) / std, train_boxes)
    train_min = (time.perf_counter() - start) / 60
    val_z = ((val_x - mean) / std).astype(np.float32)
    predict_arrays(model, val_z[:16], len(classes))  # trace once
    start = time.perf_counter()
    preds = predict_arrays(model, val_z, len(classes))
    images_per_s = len(val_z) / (time.perf_counter() - start)
    source_preds = [
        (to_source_grid(b, g.scale, g.pad, g.orig_rows, g.orig_cols, spacing), s, c)
        for (b, s, c), (g, spacing) in zip(preds, val_geom, strict=True)
    ]
    metrics = detection_metrics(val_src, source_preds, list(classes))
    if len(classes) == 1:
        metrics["localization"] = localization_iou(val_src, source_preds)
    served = {}
    if args.grpc:
        batches = [int(b) for b in args.grpc_batches.split(",")]
        served = {"served_vs_inprocess": serving_throughput(model, hp, (mean, std), val_x, batches,
                                                            args.grpc_seconds)}  # fmt: skip
    return {
        "dataset": args.dataset,
        "train_images": len(train_x),
        "val_images": len(val_x),
        "size": args.size,
        "channels": channels,
        "epochs": args.epochs,
        "width": args.width,
        "parameters": int(model.count_params()),
        "train_minutes": round(train_min, 2),
        "final_loss": history["loss"][-1],
        "inprocess_images_per_s": round(images_per_s, 1),
        **metrics,
        "froc": {str(k): v for k, v in metrics["froc"].items()},
        **served,
    }


def serving_throughput(model, hp, zscore, images, batches, seconds: float) -> dict:
    """images/s over gRPC (``medflow serve``, official stub) vs in-process, per batch size."""
    import tensorflow as tf

    from benchmarks.serving import grpc_call, in_process_call, measure, start_server, wait_ready
    from medflow.components.pusher.publish import publish
    from medflow.components.tasks.detection.export import export_detection_model
    from medflow.core.pixel_spec import PixelSpec
    from tests.support.fixed_transform import FixedTransform

    shape = (*hp.image_size, hp.channels)
    with tempfile.TemporaryDirectory() as tmp:
        export, base = Path(tmp) / "serving", Path(tmp) / "models"
        export_detection_model(
            model, FixedTransform(shape, *zscore), str(export), shape, len(hp.labels), {}
        )
        spec = PixelSpec(size=hp.image_size, channels=hp.channels).to_dict()
        contract = {"model_name": "det", "task": "detection", "labels": list(hp.labels),
                    "preprocessing": spec}  # fmt: skip
        publish(str(export), str(base / "det"), contract)
        fn = tf.saved_model.load(str(next((base / "det").iterdir()))).signatures["serving_default"]
        proc, grpc_port, _ = start_server(base, None)
        try:
            wait_ready(proc)
            out = {}
            for b in batches:
                x = np.ascontiguousarray(np.resize(images, (b, *images.shape[1:])), np.float32)
                grpc_fn, local_fn = (
                    grpc_call(grpc_port, x, "det", "boxes"),
                    in_process_call(fn, x, "boxes"),
                )
                np.testing.assert_allclose(grpc_fn(), local_fn(), atol=1e-3)  # same model
                m = measure({"grpc": grpc_fn, "in_process": local_fn}, seconds)
                rates = {k: round(b * v["calls_s"], 1) for k, v in m.items()}
                out[str(b)] = {
                    "grpc_images_s": rates["grpc"],
                    "inprocess_images_s": rates["in_process"],
                    "grpc_over_inprocess": round(rates["grpc"] / rates["in_process"], 3),
                    "grpc_p50_ms": round(m["grpc"]["p50_ms"], 1),
                    "inprocess_p50_ms": round(m["in_process"]["p50_ms"], 1),
                }
                print(f"batch {b}: gRPC {out[str(b)]}", file=sys.stderr)
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
