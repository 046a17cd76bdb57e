"""``medflow predict`` with a detection model behind the embedded server: ``--json`` boxes on
the source grid equal to the SavedModel in-process (decoding + NMS inside the graph), a box
SR per image read back, and PNG overlays. The model is an untrained CenterNet exported with a
fixed z-score in place of the Transform graph (its heatmap prior still yields boxes)."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from PIL import Image

from medflow.cli import main
from medflow.components.dicom.pixels import load_model_input
from medflow.components.ingest.voc_import import import_voc
from medflow.core.pixel_spec import PixelSpec
from tests.support.fixed_transform import FixedTransform

SIZE = (64, 64)
LABELS = ["RBC", "WBC", "Platelets"]
SPEC = PixelSpec(size=SIZE, channels=3, window=None)


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    import keras

    from medflow.components.pusher.publish import publish
    from medflow.components.tasks.detection.export import export_detection_model
    from medflow.components.tasks.detection.model import build_centernet

    keras.utils.set_random_seed(5)
    model = build_centernet((*SIZE, 3), len(LABELS), width=4)
    export = tmp_path_factory.mktemp("export") / "serving"
    export_detection_model(
        model, FixedTransform((*SIZE, 3), 128.0, 64.0), str(export), (*SIZE, 3), len(LABELS), {}
    )
    base = tmp_path_factory.mktemp("models")
    contract = {
        "model_name": "det",
        "task": "detection",
        "labels": LABELS,
        "preprocessing": SPEC.to_dict(),
    }
    publish(str(export), str(base / "det"), contract)
    return base


@pytest.fixture(scope="module")
def dicoms(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bccd")
    import_voc(shared_data / "bccd", out, classes=tuple(LABELS), limit=1)
    return sorted((out / "dicom").glob("*.dcm"))


def _in_process(model_base, path) -> list[dict]:
    """The SavedModel's boxes for ``path``, mapped to source pixels here."""
    import tensorflow as tf

    from medflow.components.tasks.detection.results import source_boxes

    array, geometry = load_model_input(path, SPEC)[0]
    model = tf.saved_model.load(str(next((model_base / "det").iterdir())))
    out = model.signatures["serving_default"](image=tf.constant(array[None]))
    o = {k: v.numpy()[0] for k, v in out.items()}
    return source_boxes(
        o["boxes"], o["scores"], o["classes"], o["num_detections"], LABELS, geometry, None
    )


def test_predict_json_boxes_sr_and_overlays(server, model_base, dicoms, tmp_path, capsys):
    from medflow.components.tasks.detection.sr import read_box_sr

    code = main(
        [
            "predict",
            *map(str, dicoms),
            "--server",
            f"127.0.0.1:{server.grpc_port}",
            "--model",
            "det",
            "--contract",
            str(next((model_base / "det").iterdir()) / "contract.json"),
            "--json",
            "--sr-out",
            str(tmp_path / "sr"),
            "--overlay-out",
            str(tmp_path / "overlays"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    records = doc["predictions"]
    assert len(records) == len(dicoms) == 2
    for record, path in zip(records, dicoms, strict=True):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert record["sop_instance_uid"] == ds.SOPInstanceUID
        boxes = record["boxes"]
        assert 0 < len(boxes) <= 100
        assert set(boxes[0]) == {"label", "score", "x0", "y0", "x1", "y1"}
        for b in boxes:
            assert b["label"] in LABELS
            assert 0 <= b["x0"] <= b["x1"] <= ds.Columns and 0 <= b["y0"] <= b["y1"] <= ds.Rows
        # the served boxes are the SavedModel's, in process
        expected = _in_process(model_base, path)
        assert [b["label"] for b in boxes] == [b["label"] for b in expected]
        for got, want in zip(boxes, expected, strict=True):
            for k in ("score", "x0", "y0", "x1", "y1"):
                assert got[k] == pytest.approx(want[k], abs=1e-3)
        uid, read = read_box_sr(
            pydicom.dcmread(tmp_path / "sr" / f"sr-{ds.SOPInstanceUID}.dcm"), "sr"
        )
        assert uid == ds.SOPInstanceUID
        assert len(read) == len(boxes)
        assert read[0]["label"] == boxes[0]["label"]
        assert read[0]["x0"] == pytest.approx(boxes[0]["x0"], abs=1e-3)
        overlay = next((tmp_path / "overlays").glob(f"{ds.SOPInstanceUID}_f0.png"))
        with Image.open(overlay) as im:
            assert im.size == (ds.Columns, ds.Rows) and im.mode == "RGB"
            drawn = np.asarray(im)
        assert drawn.shape == (ds.Rows, ds.Columns, 3)


def test_predict_table_lists_boxes(server, dicoms, capsys):
    code = main(
        ["predict", str(dicoms[0]), "--server", f"127.0.0.1:{server.grpc_port}", "--model", "det"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "x0" in out and "class_0" in out  # no contract: default class names


def test_compile_for_kubeflow_names_the_detection_modules(tmp_path, capsys):
    out = tmp_path / "pipeline.yaml"
    code = main(
        ["compile", "--task", "detection", "--class-names", "RBC,WBC,Platelets",
         "--image-size", "128", "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    text = out.read_text()
    assert "medflow.components.tasks.detection.trainer.run_fn" in text
    assert "medflow.components.tasks.detection.transform.preprocessing_fn" in text
    assert "medflow.components.tasks.detection.tfma_metrics" in text


def test_predict_record_queues_boxes_files_for_review(server, model_base, dicoms, tmp_path):
    from medflow.components.tasks.detection.review import read_boxes_file
    from medflow.dashboard.store import ReviewStore

    url = f"sqlite:///{tmp_path}/review.db"
    contract = next((model_base / "det").iterdir()) / "contract.json"
    code = main(
        ["predict", str(dicoms[0]), "--server", f"127.0.0.1:{server.grpc_port}", "--model",
         "det", "--contract", str(contract), "--record", "--store-url", url]
    )  # fmt: skip
    assert code == 0
    store = ReviewStore(url)
    try:
        [pred] = store.list_queue()
        ds = pydicom.dcmread(dicoms[0], stop_before_pixels=True)
        assert pred.task == "detection" and pred.sop_instance_uid == ds.SOPInstanceUID
        boxes = read_boxes_file(pred.mask_ref)  # beside the store: masks/<uid>_f0.boxes.json
        assert pred.mask_ref.startswith(str(tmp_path / "masks"))
        assert (boxes.rows, boxes.columns, boxes.labels) == (ds.Rows, ds.Columns, LABELS)
        assert boxes.boxes and boxes.source == "model"
        assert pred.scores == [max((b["score"] for b in boxes.boxes if b["label"] == k),
                                   default=0.0) for k in LABELS]  # fmt: skip
    finally:
        store.close()


def test_push_stores_the_boxes_sr_in_the_pacs(
    server, model_base, dicoms, tmp_path, monkeypatch, capsys
):
    """--dicomweb --push with a detection model: a real Orthanc gets one box SR per image in
    its study; read back over QIDO/WADO, its boxes are the ones ``--json`` printed."""
    from medflow.components.dicom.dicomweb import Credentials, DicomwebSource, Query, RetryPolicy
    from medflow.components.dicom.reader import parse
    from medflow.components.tasks.detection.sr import read_box_sr
    from tests.integration.orthanc import orthanc_server

    contract = next((model_base / "det").iterdir()) / "contract.json"
    for pacs in orthanc_server(tmp_path / "orthanc"):
        retry = RetryPolicy(attempts=2, backoff_s=0.05, timeout_s=10)
        source = DicomwebSource(pacs.dicomweb_url, Credentials(*pacs.auth), retry=retry)
        assert source.store([p.read_bytes() for p in dicoms]) == len(dicoms)
        monkeypatch.setenv("MEDFLOW_DICOMWEB_USERNAME", pacs.auth[0])
        monkeypatch.setenv("MEDFLOW_DICOMWEB_PASSWORD", pacs.auth[1])
        image = pydicom.dcmread(dicoms[0], stop_before_pixels=True)
        study = str(image.StudyInstanceUID)
        code = main(
            ["predict", "--dicomweb", pacs.dicomweb_url, "--study", study, "--push", "--json"]
            + ["--server", f"127.0.0.1:{server.grpc_port}", "--model", "det"]
            + ["--contract", str(contract)]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        doc = json.loads(out)
        (record,) = doc["predictions"]
        assert record["sop_instance_uid"] == image.SOPInstanceUID and record["boxes"]
        (pushed,) = doc["pushed"]
        assert pushed["kind"] == "SR" and pushed["study_instance_uid"] == study
        assert pushed["boxes"] == len(record["boxes"])
        (ref,) = source.search(Query(study_uids=(study,), modality="SR"))
        assert ref.sop_uid == pushed["sop_instance_uid"]
        uid, read = read_box_sr(parse(source.retrieve(ref), "pushed SR"), "pushed SR")
        assert uid == image.SOPInstanceUID
        assert [b["label"] for b in read] == [b["label"] for b in record["boxes"]]
        for got, want in zip(read, record["boxes"], strict=True):
            for k in ("score", "x0", "y0", "x1", "y1"):
                assert got[k] == pytest.approx(want[k], abs=1e-3), k
