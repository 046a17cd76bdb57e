"""Box review in the served dashboard, in Chromium driven by Playwright: a reviewer signs in,
opens a detection case (a real BCCD blood smear with boxes made from its human boxes), sees
the boxes over the image, switches on Correct boxes (draw), adds a platelet box with the
mouse, moves one box and deletes another with the canvas's Edit tools, saves; ``medflow
labels export`` then writes the corrected boxes as the manifest's ``boxes`` column, which
ingestion's parser reads back. Screenshots go to ``test-artifacts/`` (the README shows copies
from ``docs/screenshots/``). Without Chromium or Playwright the test is skipped locally and
fails under CI, as the dashboard's browser test."""

from __future__ import annotations

import csv

import pytest

from medflow.cli import main
from medflow.components.ingest.voc_import import parse_boxes
from medflow.dashboard.store import ReviewStore
from tests.e2e.test_browser_dashboard import (
    PASSWORD,
    _alerts_saying,
    _drag,
    _idle,
    _sign_in,
    _viewer,
    page,
)
from tests.support.dashboard_app import served_dashboard
from tests.support.detection_cases import LABELS, seed_detection

pytestmark = pytest.mark.timeout(300)
__all__ = ["page"]  # the browser fixture, shared with the dashboard's browser test
SIZE = (480, 640)  # BCCD images: rows, columns


def _free_point(boxes: list[dict], k: int) -> tuple[float, float]:
    """A point (image fractions x, y) inside box ``k`` and inside no box drawn after it (the
    canvas selects the topmost box under the mouse)."""
    b = boxes[k]
    later = boxes[k + 1 :]
    for fy in (0.5, 0.3, 0.7, 0.15, 0.85):
        for fx in (0.5, 0.3, 0.7, 0.15, 0.85):
            x, y = b["x0"] + fx * (b["x1"] - b["x0"]), b["y0"] + fy * (b["y1"] - b["y0"])
            if not any(o["x0"] <= x <= o["x1"] and o["y0"] <= y <= o["y1"] for o in later):
                return x / SIZE[1], y / SIZE[0]
    raise AssertionError(f"no free point in box {k}")


def _pick(page, label: str, option: str) -> None:
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    _idle(page)


def _at(box: dict, point: tuple[float, float]) -> tuple[float, float]:
    return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]


def test_correct_boxes_in_the_browser_and_export_them(page, tmp_path, shared_data, artifacts_dir):
    url = f"sqlite:///{tmp_path}/review.db"
    store = ReviewStore(url)
    store.add_user("alice", PASSWORD, "reviewer")
    pid, truth = seed_detection(store, shared_data / "bccd", tmp_path)
    shown = truth[:-1]  # the seeded prediction's boxes over the review threshold
    try:
        with served_dashboard(url, tmp_path / "work", tmp_path, tmp_path / "st.log") as base:
            _sign_in(page, f"{base}/?page=review&case={pid}")
            page.get_by_role("button", name="Accept boxes (A)").wait_for()
            _viewer(page)
            page.screenshot(path=str(artifacts_dir / "dashboard_review_detection.png"))
            page.get_by_text("Correct boxes (draw)", exact=True).click()
            canvas = page.locator("canvas.upper-canvas").first
            canvas.wait_for()
            _pick(page, "Class of new boxes", "Platelets")
            box = canvas.bounding_box()
            _drag(page, box, (0.02, 0.90), (0.08, 0.97), steps=10)  # a new platelet box
            _idle(page)
            page.get_by_role("button", name="Edit", exact=True).click()
            moved = _free_point(shown, 0)
            x, y = _at(box, moved)
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 0.05 * box["width"], y, steps=8)  # 32 image pixels right
            page.mouse.up()
            _idle(page)
            gone = _free_point(shown, len(shown) - 1)
            page.mouse.click(*_at(box, gone))
            _idle(page)  # the selection is a canvas change the app may rerun on
            page.get_by_role("button", name="Delete selected").click()
            _idle(page)
            page.screenshot(path=str(artifacts_dir / "dashboard_box_correction.png"))
            page.get_by_role("button", name="Save corrected boxes (S)").click()
            _idle(page)
            alerts = _alerts_saying(page, f"Case {pid}: corrected boxes saved")
            assert any(f"Case {pid}: corrected boxes saved" in a for a in alerts), alerts
        out = tmp_path / "labels.csv"
        assert main(["labels", "export", "--store-url", url, "--out", str(out)]) == 0
        with out.open(newline="") as handle:
            [row] = list(csv.DictReader(handle))
        assert row["_action"] == "correct" and row["_reviewer"] == "alice"
        boxes = parse_boxes(row["boxes"], str(out), tuple(LABELS))
        assert len(boxes) == len(shown)  # one added, one deleted
        [new] = [b for b in boxes if b.label == "Platelets"]
        assert new.x0 == pytest.approx(0.02 * 640, abs=8) and new.y1 == pytest.approx(
            0.97 * 480, abs=8
        )
        first = shown[0]
        assert any(b.label == first["label"] and abs(b.x0 - first["x0"] - 32) < 6
                   and abs(b.y0 - first["y0"]) < 6 for b in boxes)  # fmt: skip
        last = shown[-1]
        assert not any(abs(b.x0 - last["x0"]) < 1 and abs(b.y0 - last["y0"]) < 1 for b in boxes)
        [audit] = store.audit_records(action="correct")
        assert audit.actor == "alice" and "corrected boxes, saved as" in audit.outcome
    finally:
        store.close()
