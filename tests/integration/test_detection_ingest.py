"""Boxes at ingestion: a manifest ``boxes`` cell naming a DICOM SR (TID 1500, as ``medflow
predict --sr-out`` writes it) round-trips into the examples' boxes; malformed cells, SRs
without planar ROIs or about another image, and boxes outside the image quarantine the file
(reason ``label_invalid``) with a message naming the file, the manifest line and the column;
the rest of the batch is written. Real BCCD images (``medflow import-voc``)."""

from __future__ import annotations

import csv
import json

import pydicom
import pytest

from medflow.cli import main
from medflow.components.ingest.voc_import import import_voc
from medflow.components.tasks.detection.outputs import write_srs
from medflow.components.tasks.detection.results import BoxPrediction

LABELS = ["RBC", "WBC", "Platelets"]


@pytest.fixture()
def key_file(tmp_path):
    path = tmp_path / "deid.key"
    assert main(["deid-key", "--out", str(path)]) == 0
    return path


def _prediction(path, boxes) -> BoxPrediction:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return BoxPrediction(
        str(path), 0, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, "det", 1,
        LABELS, boxes=boxes, rows=int(ds.Rows), columns=int(ds.Columns),
    )  # fmt: skip


def _examples(folder) -> list[dict]:
    import tensorflow as tf

    out = []
    for path in sorted(folder.glob("*/*.gz")):
        for raw in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
            feats = tf.train.Example.FromString(raw.numpy()).features.feature
            out.append({k: feats[k].bytes_list.value[0].decode() for k in ("boxes", "sop_uid")})
    return out


def test_boxes_from_sr_and_bad_cells_at_ingest(shared_data, tmp_path, key_file):
    manifest = import_voc(shared_data / "bccd", tmp_path / "voc", limit=6, splits=("train",))
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    dicoms = [tmp_path / "voc" / "dicom" / r["_source"].replace(".jpg", ".dcm") for r in rows]
    truth = [{**b, "score": 0.9} for b in json.loads(rows[0]["boxes"])]
    sr = write_srs([_prediction(dicoms[0], truth)], tmp_path / "voc" / "sr")[0]
    empty = write_srs([_prediction(dicoms[2], [])], tmp_path / "voc" / "sr")[0]
    rows[0]["boxes"] = f"sr/sr-{rows[0]['SOPInstanceUID']}.dcm"  # relative to the manifest
    rows[2]["boxes"] = f"sr/sr-{rows[2]['SOPInstanceUID']}.dcm"  # an SR without planar ROIs
    rows[3]["boxes"] = rows[0]["boxes"]  # the SR of another image
    rows[4]["boxes"] = '[{"label": "RBC", "x0": 600, "y0": 10, "x1": 700, "y1": 50}]'
    rows[5]["boxes"] = '[{"label": "RBC", "x0": 1}]'  # malformed
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    args = ["ingest", str(tmp_path / "voc" / "dicom"), "--labels", str(manifest), "--out",
            str(out), "--deid-key-file", str(key_file), "--image-size", "32", "--splits", "train=100"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "ingest_report.json").read_text())
    assert report["quarantine_reasons"] == {"label_invalid": 4}
    said = {f["path"]: f["message"] for f in report["files"] if f.get("reason")}
    name = {i: dicoms[i].name for i in range(6)}
    assert f"{name[2]} (label manifest {manifest} line 4), column boxes: SR " in said[name[2]]
    assert "holds no planar ROI" in said[name[2]] and empty.boxes == 0
    assert f"holds the boxes of image {rows[0]['SOPInstanceUID']}, not of this" in said[name[3]]
    assert "line 6), column boxes: box 0 (RBC x0=600" in said[name[4]]
    assert "is outside the 640x480 image; fix or remove it" in said[name[4]]
    assert (
        "line 7), column boxes: box 0 is {'label': 'RBC', 'x0': 1}, not a JSON list"
        in (said[name[5]])
    )
    assert all("\n" not in m for m in said.values())
    written = _examples(out)
    assert len(written) == 2 and sr.boxes == len(truth)
    from_sr = max(written, key=lambda e: len(json.loads(e["boxes"])))
    got = json.loads(from_sr["boxes"])
    assert [b["label"] for b in got] == [b["label"] for b in truth]
    for g, t in zip(got, truth, strict=True):
        assert all(g[k] == pytest.approx(t[k], abs=1e-3) for k in ("x0", "y0", "x1", "y1"))
