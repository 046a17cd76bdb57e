"""The registration review page in Chromium, driven by Playwright (issue 18): a reviewer
opens a registration case (the fixed image, and the warped moving image that ``medflow
predict --pairs --record`` saved), switches the view between checkerboard and blend (the
viewer's pixels change with it), and accepts the registration (stored and audited).

Same setup as ``test_browser_dashboard.py`` (its sign-in, viewer and browser helpers): the
app served by ``streamlit run`` on loopback against a temporary review store, Debian's
Chromium; skipped locally without Chromium or Playwright, failed under CI.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medflow.dashboard.store import ReviewStore
from tests.e2e.test_browser_dashboard import PASSWORD, _idle, _shot, _sign_in, _viewer, page
from tests.support.dashboard_app import served_dashboard

# slow: ~65 s on the loaded 2-core machine (streamlit start, Chromium, three reruns); the
# default tier keeps the review page's registration rendering in its unit tests
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
__all__ = ["page"]  # the Chromium page fixture


def _registration_case(store: ReviewStore, folder) -> int:
    """A fixed image (a bright disc, DICOM) and its warped moving image (the disc 12 pixels
    to the right, PNG on the fixed grid) queued as a registration case."""
    from pydicom.filewriter import dcmwrite

    from medflow.components.ingest.hc18_import import _instance

    folder.mkdir(parents=True)
    yy, xx = np.meshgrid(np.arange(128), np.arange(160), indexing="ij")
    fixed = (((yy - 64) ** 2 + (xx - 70) ** 2 < 40**2) * 200 + 20).astype(np.uint8)
    ds = _instance(fixed, "fixed", "009", 0.5)
    dcmwrite(folder / "fixed.dcm", ds, enforce_file_format=True)
    Image.fromarray(np.roll(fixed, 12, axis=1)).save(folder / "warped.png")
    return store.record_prediction(
        sop_instance_uid=ds.SOPInstanceUID,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        image_ref=str(folder / "fixed.dcm"),
        model_name="reg",
        model_version="1",
        labels=["registered"],
        scores=[0.81],
        mask_ref=str(folder / "warped.png"),
        task="registration",
    )


def _tinted(page) -> float:
    """Share of the viewer's shown pixels whose red and green differ (the blend's magenta
    and green; the checkerboard is grey, the toolbar's few blue buttons aside)."""
    _, box = _viewer(page)
    shot = page.screenshot(clip=box)
    rgb = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(np.int16)
    return float((np.abs(rgb[..., 0] - rgb[..., 1]) > 30).mean())


def test_review_a_registration_switch_views_and_accept(tmp_path, page, artifacts_dir):  # noqa: F811
    url = f"sqlite:///{tmp_path}/review.db"
    store = ReviewStore(url)
    try:
        store.add_user("alice", PASSWORD, "reviewer")
        case = _registration_case(store, tmp_path / "pair")
        with served_dashboard(url, tmp_path / "work", tmp_path, tmp_path / "st.log") as base:
            _sign_in(page, f"{base}/?page=review&case={case}")
            page.get_by_text("registration, score 0.810").first.wait_for()
            board = _tinted(page)
            _shot(page, artifacts_dir, "review_registration_checkerboard")
            page.get_by_text("blend", exact=True).click()
            _idle(page)
            # the blend tints fixed magenta and warped green where they differ (the disc's
            # two 12-pixel crescents); the checkerboard shows grey squares
            assert board < 0.01 and _tinted(page) > board + 0.01, (board, _tinted(page))
            _shot(page, artifacts_dir, "review_registration_blend")
            page.get_by_text("checkerboard", exact=True).click()
            _idle(page)
            assert _tinted(page) < 0.01
            page.get_by_role("button", name="Accept registration (A)").click()
            page.get_by_text(f"Case {case}: accept saved.").wait_for()
        assert store.get_prediction(case).status == "accepted"
        [audit] = [a for a in store.audit_records() if a.action == "accept"]
        assert audit.actor == "alice" and "accepted registration" in audit.outcome
        assert "warped.png" in audit.outcome
    finally:
        store.close()
