"""Reviewing detections: boxes files, the canvas mapping, the store's accept / correct / reject
with the file's hash and the audit log, the labels export's ``boxes`` column (read back by
ingestion's parser), and the review page (boxes drawn, threshold slider, actions) under
Streamlit's AppTest on a real BCCD image."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medflow.components.ingest.voc_import import parse_boxes
from medflow.components.tasks.detection.box_editor import from_canvas, to_canvas
from medflow.components.tasks.detection.review import (
    counts_text,
    read_boxes_file,
    write_boxes_file,
)
from medflow.core.errors import InputError
from medflow.core.tasks import get_task, mask_review_task
from medflow.dashboard.labels_export import export_labels
from medflow.dashboard.store import ReviewError, ReviewStore
from tests.support.dashboard_app import open_case
from tests.support.detection_cases import LABELS, seed_detection
from tests.support.page_images import page_images

PASSWORD = "review-pass-1"


@pytest.fixture()
def store(tmp_path):
    s = ReviewStore(f"sqlite:///{tmp_path}/review.db")
    yield s
    s.close()


@pytest.fixture()
def case(store, shared_data, tmp_path):
    return seed_detection(store, shared_data / "bccd", tmp_path)


def _rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_boxes_file_round_trip_and_bad_files(tmp_path):
    boxes = [{"label": "WBC", "score": 0.8, "x0": 1, "y0": 2, "x1": 30.5, "y1": 40},
             {"label": "RBC", "score": 0.2, "x0": 5, "y0": 5, "x1": 9, "y1": 9}]  # fmt: skip
    path = write_boxes_file(tmp_path / "a.boxes.json", boxes, LABELS, (48, 64), source="model")
    read = read_boxes_file(path)
    assert (read.rows, read.columns, read.labels) == (48, 64, LABELS)
    assert [b["label"] for b in read.shown()] == ["WBC"]  # 0.2 is under the 0.3 threshold
    assert [b["label"] for b in read.shown(0.1)] == ["WBC", "RBC"]
    assert read.kept()[0].x1 == 30.5
    bad = {
        "not JSON": "{",
        "no labels": json.dumps({"boxes": [], "rows": 1, "columns": 1}),
        "bad label": json.dumps({**json.loads(path.read_text()), "labels": ["RBC"]}),
    }
    for text in bad.values():
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match="bad.json"):
            read_boxes_file(tmp_path / "bad.json")
    with pytest.raises(InputError, match="cannot be read"):
        read_boxes_file(tmp_path / "missing.json")


def test_canvas_boxes_map_back_to_source_pixels():
    boxes = [{"label": "WBC", "x0": 10, "y0": 20, "x1": 110, "y1": 70}]
    scale = (760 / 640, 570 / 480)
    drawing = to_canvas(boxes, LABELS, scale)
    [obj] = drawing["objects"]
    assert obj["stroke"] == "#3cb44b"  # WBC's colour, as in the PNG overlays
    moved = {"label": "WBC", "left": obj["left"] + 19, "top": obj["top"], "width": obj["width"],
             "height": obj["height"]}  # fmt: skip
    outside = {"label": "RBC", "left": 700, "top": 500, "width": 200, "height": 200}
    back = from_canvas([moved, outside], LABELS, scale, (480, 640))
    assert back[0]["x0"] == pytest.approx(26) and back[0]["x1"] == pytest.approx(126)
    assert back[1]["x1"] == 640 and back[1]["y1"] == 480 and back[1]["score"] is None
    with pytest.raises(InputError, match=r"box 1 .* class 'cat', not one of"):
        from_canvas([{**moved, "label": "cat"}], LABELS, scale, (480, 640))
    with pytest.raises(InputError, match="box 1 .* under 1 pixel"):
        from_canvas([{**moved, "left": 900}], LABELS, scale, (480, 640))


def test_accept_exports_the_boxes_over_the_threshold(store, case, tmp_path):
    pid, truth = case
    assert mask_review_task() == "segmentation"  # detection judges boxes, not masks
    store.review(pid, action="accept", reviewer="alice", comment="fine")
    [audit] = store.audit_records(action="accept")
    assert "accepted boxes (" in audit.outcome and "sha256" in audit.outcome
    assert export_labels(store, tmp_path / "labels.csv") == 1
    [row] = _rows(tmp_path / "labels.csv")
    assert list(row)[:2] == ["SOPInstanceUID", "boxes"] and row["_boxes_sha256"]
    exported = parse_boxes(row["boxes"], "labels.csv", tuple(LABELS))
    assert len(exported) == len(truth) - 1  # the 0.1 box is left out
    assert exported[0].x0 == truth[0]["x0"]


def test_correct_needs_a_boxes_file_and_exports_it(store, case, tmp_path):
    pid, _ = case
    with pytest.raises(ReviewError, match="needs the corrected"):
        store.review(pid, action="correct", reviewer="alice")
    with pytest.raises(ReviewError, match="not 'correct_label'|must be one of"):
        store.review(pid, action="correct_label", reviewer="alice")
    fixed = [{"label": "Platelets", "score": None, "x0": 1, "y0": 2, "x1": 11, "y1": 12}]
    path = write_boxes_file(tmp_path / "fixed.json", fixed, LABELS, (480, 640), source="reviewer")
    store.review(pid, action="correct", reviewer="bob", mask_ref=path)
    [label] = store.reviewed_labels()
    assert label.mask_ref == str(path) and label.action == "correct"
    export_labels(store, tmp_path / "labels.csv")
    [row] = _rows(tmp_path / "labels.csv")
    assert json.loads(row["boxes"]) == [
        {"label": "Platelets", "x0": 1, "y0": 2, "x1": 11, "y1": 12}
    ]
    path.write_text(path.read_text().replace('"x0": 1', '"x0": 2'))  # changed after review
    with pytest.raises(InputError, match="changed after it was corrected"):
        export_labels(store, tmp_path / "again.csv")


def test_a_broken_boxes_file_cannot_be_accepted_but_can_be_rejected(store, case):
    pid, _ = case
    pred = store.get_prediction(pid)
    open(pred.mask_ref, "w").write("[")
    with pytest.raises(ReviewError, match="is not a medflow boxes file"):
        store.review(pid, action="accept", reviewer="alice")
    store.review(pid, action="reject", reviewer="alice")
    assert store.get_prediction(pid).status == "rejected"
    assert get_task("detection").review().queue_label(pred) == "boxes file unreadable"


def test_review_page_draws_boxes_over_the_threshold(store, case, monkeypatch, tmp_path):
    pid, truth = case
    store.add_user("alice", PASSWORD, "reviewer")
    monkeypatch.setenv("MEDFLOW_STORE_URL", store.url)
    monkeypatch.setenv("MEDFLOW_WORKDIR", str(tmp_path / "work"))
    at = open_case(pid, "alice", PASSWORD)
    assert at.radio(key=f"overlay_{pid}").value == "boxes"
    assert [b.label for b in at.button][:2] == ["Accept boxes (A)", "Reject boxes (X)"]
    assert any(counts_text(truth[:-1]) in m.value for m in at.markdown)
    drawn = page_images(at)[0].astype(np.int16)
    at.slider(key=f"box_threshold_{pid}").set_value(0.05).run()
    more = page_images(at)[0].astype(np.int16)
    at.radio(key=f"overlay_{pid}").set_value("none").run()
    plain = page_images(at)[0].astype(np.int16)
    changed = np.abs(drawn - plain).max(axis=2) > 40
    assert 0.005 < changed.mean() < 0.3  # box outlines, not the whole image
    extra = np.abs(more - drawn).max(axis=2) > 40  # the 0.1 box near the top-left corner
    rows, cols = extra.shape
    assert extra[: rows // 6, : cols // 6].sum() > 20 and not at.exception
    at.button(key="review_accept").click().run()
    assert store.get_prediction(pid).status == "accepted" and not at.exception
