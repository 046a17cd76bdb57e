"""Detection cases for the review store: a real BCCD blood smear (``medflow import-voc``) and a
boxes file made from its human boxes (a seeded prediction, not a model's): every human box
with score 0.9 but the last, plus one wrong low-score box below the review threshold."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom

from medflow.components.ingest.voc_import import import_voc
from medflow.components.tasks.detection.review import write_boxes_file
from medflow.dashboard.store import ReviewStore

LABELS = ["RBC", "WBC", "Platelets"]
MODEL = "detector"


def seed_detection(store: ReviewStore, bccd: Path, out_dir: Path) -> tuple[int, list[dict]]:
    """Queues one detection case; returns its id and the image's human boxes."""
    manifest = import_voc(bccd, out_dir / "bccd", limit=1, splits=("eval",))
    with manifest.open(newline="") as handle:
        [row] = list(csv.DictReader(handle))
    truth = json.loads(row["boxes"])
    image = manifest.parent / "dicom" / row["_source"].replace(".jpg", ".dcm")
    predicted = [{**b, "score": 0.9} for b in truth[:-1]]
    predicted.append({"label": "WBC", "score": 0.1, "x0": 5, "y0": 5, "x1": 60, "y1": 60})
    boxes = write_boxes_file(out_dir / "pred.boxes.json", predicted, LABELS, (480, 640),
                             source="model")  # fmt: skip
    ds = pydicom.dcmread(image, stop_before_pixels=True)
    pid = store.record_prediction(
        sop_instance_uid=ds.SOPInstanceUID,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        image_ref=str(image),
        model_name=MODEL,
        model_version="1",
        labels=LABELS,
        scores=[0.9, 0.9, 0.0],
        mask_ref=str(boxes),
        task="detection",
    )
    return pid, truth
