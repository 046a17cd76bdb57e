"""The whole pipeline with the detection task on real BCCD blood smears (VOC -> DICOM + boxes).

Import a BCCD subset (official train/val lists), run ingestion -> Transform (boxes passed
through) -> CenterNet Trainer -> TFMA Evaluator (COCO mAP@0.5 / mAP / per-class AP / FROC
with pycocotools, blessing on mAP@0.5) -> Pusher; then a second run with an unreachable
mAP floor is refused, and the pushed model behind the embedded server answers the same boxes
as the SavedModel in process, with an SR read back.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom
import pytest

from medflow.pipelines.pipeline import COMPONENT_IDS, RESOLVER_ID

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SIZE = 128
LABELS = ("RBC", "WBC", "Platelets")
HPARAMS = {"epochs": 3, "width": 12, "batch_size": 8}


@pytest.fixture(scope="module")
def runs(shared_data, tmp_path_factory):
    from medflow.components.ingest.voc_import import import_voc
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    data = tmp_path_factory.mktemp("bccd")
    manifest = import_voc(shared_data / "bccd", data, classes=LABELS, limit=8)
    workdir = tmp_path_factory.mktemp("work")
    config = PipelineConfig(
        data_root=str(data / "dicom"),
        label_manifest=str(manifest),
        task="detection",
        image_size=SIZE,
        channels=3,
        labels=LABELS,
        hyperparameters=HPARAMS,
        thresholds={"min_map50": 0.0},
        pipeline_name="bccd-det",
        model_name="bccd",
    )
    blessed = run_local(config, workdir=workdir, progress=None)
    refused = run_local(
        config.replace(thresholds={"min_map50": 0.99}), workdir=workdir, progress=None
    )
    return {"blessed": blessed, "refused": refused, "data": data, "manifest": manifest}


def test_every_component_ran_and_the_model_was_blessed_on_map(runs):
    summary = runs["blessed"]
    for name in COMPONENT_IDS:
        if name != RESOLVER_ID:
            assert summary["components"][name]["status"] == "executed", name
    overall = summary["metrics"]["overall"]
    assert {"map50", "map", "froc_mean", "ap50_RBC", "ap50_WBC", "ap50_Platelets"} <= set(overall)
    assert 0 <= overall["map"] <= overall["map50"] <= 1
    assert summary["blessed"] and summary["pushed"]
    contract = json.loads((Path(summary["model_path"]) / "contract.json").read_text())
    assert contract["task"] == "detection" and contract["labels"] == list(LABELS)
    outputs = contract["signatures"]["serving_default"]["outputs"]
    assert outputs["boxes"]["shape"] == [-1, 100, 4]


def test_an_unreachable_map_floor_refuses_the_model(runs):
    refused = runs["refused"]
    assert not refused["blessed"] and not refused["pushed"]


def test_ingest_counts_reconcile_with_the_import_report(runs):
    ingest = runs["blessed"]["ingest"]
    rows = list(csv.DictReader(runs["manifest"].open()))
    assert ingest["inputs"] == ingest["written"] == len(rows) == 16
    report = json.loads((runs["data"] / "import_report.json").read_text())
    assert report["boxes_read"] == report["boxes_kept"] + sum(report["boxes_dropped"].values())
    assert report["boxes_kept"] == sum(len(json.loads(r["boxes"])) for r in rows)
    assert runs["blessed"]["metrics"]["overall"]["example_count"] == 8  # the val images


def test_served_boxes_equal_the_savedmodel_in_process_and_sr_reads_back(runs, tmp_path):
    import tensorflow as tf

    from medflow.components.dicom.pixels import load_model_input
    from medflow.components.tasks.detection.outputs import write_srs
    from medflow.components.tasks.detection.results import source_boxes
    from medflow.components.tasks.detection.sr import read_box_sr
    from medflow.core.pixel_spec import PixelSpec
    from medflow.serving.client import PredictionClient
    from tests.integration.test_serving_helpers import start_server

    model_path = Path(runs["blessed"]["model_path"])
    files = sorted((runs["data"] / "dicom").glob("*.dcm"))[:3]
    server = start_server(model_path.parents[1])
    try:
        with PredictionClient(f"127.0.0.1:{server.grpc_port}") as client:
            results, rejected = client.predict_dicom(
                files, "bccd", contract=model_path / "contract.json"
            )
    finally:
        server.stop()
    assert rejected == [] and len(results) == 3
    model = tf.saved_model.load(str(model_path))
    spec = PixelSpec(size=(SIZE, SIZE), channels=3)
    for result, path in zip(results, files, strict=True):
        array, geometry = load_model_input(path, spec)[0]
        out = model.signatures["serving_default"](image=tf.constant(array[None]))
        o = {k: v.numpy()[0] for k, v in out.items()}
        expected = source_boxes(
            o["boxes"], o["scores"], o["classes"], o["num_detections"], list(LABELS), geometry, None
        )
        assert result.boxes == expected
    written = write_srs(results, tmp_path / "sr")
    assert len(written) == 3
    for w, result in zip(written, results, strict=True):
        if result.boxes:  # an SR without boxes has no planar ROI to read back
            uid, boxes = read_box_sr(pydicom.dcmread(w.path), w.path)
            assert uid == result.sop_instance_uid and len(boxes) == len(result.boxes)
