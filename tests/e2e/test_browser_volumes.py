"""The Volumes page in Chromium, driven by Playwright (as tests/e2e/test_browser_dashboard.py):
a reviewer signs in, opens a real hippocampus volume with its mask, scrolls through slices
with the keyboard on the slice slider, switches to the coronal plane, accepts the mask, and
exports the accepted pair for ``medflow import-nifti``."""

from __future__ import annotations

import re
import shutil

import pytest

from medflow.dashboard.store import ReviewStore
from medflow.dashboard.volume_review import read_decisions
from tests.e2e.test_browser_dashboard import PASSWORD, _idle, _sign_in, page  # noqa: F401
from tests.support.dashboard_app import served_dashboard
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # about 1 min in Chromium
NAME = "hippocampus_003"


@pytest.fixture()
def served_volumes(shared_data, tmp_path, monkeypatch):
    folder = tmp_path / "volume_review"
    for kind, src in (("images", "imagesTr"), ("masks", "labelsTr")):
        (folder / kind).mkdir(parents=True)
        shutil.copy(shared_data / "hippocampus" / src / f"{NAME}.nii.gz", folder / kind)
    monkeypatch.setenv("MEDFLOW_VOLUME_DIR", str(folder))
    url = f"sqlite:///{tmp_path}/review.db"
    store = ReviewStore(url)
    store.add_user("alice", PASSWORD, "reviewer")
    try:
        with served_dashboard(url, tmp_path / "work", tmp_path, tmp_path / "streamlit.log") as base:
            yield base, folder
    finally:
        store.close()


def _caption(tab) -> tuple[str, int, int]:
    text = tab.get_by_text(re.compile(rf"{NAME}: \w+ slice \d+ of \d+")).inner_text()
    plane, index, n = re.search(r"(\w+) slice (\d+) of (\d+)", text).groups()
    return plane, int(index), int(n)


def test_scroll_switch_plane_accept_and_export(served_volumes, page):  # noqa: F811
    base, folder = served_volumes
    _sign_in(page, base)
    page.get_by_text("Volumes", exact=True).click()
    _idle(page)
    plane, first, n = _caption(page)
    assert plane == "axial" and first == n // 2 + 1
    slider = page.locator("[data-testid='stSlider']").filter(has_text="Slice").get_by_role("slider")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    _idle(page)
    wait_until(lambda: _caption(page)[1] == first + 3, timeout=30, message="slice +3")
    page.get_by_text("coronal", exact=True).click()
    _idle(page)
    wait_until(lambda: _caption(page)[0] == "coronal", timeout=30, message="the coronal plane")
    page.get_by_role("button", name="Accept mask").click()
    _idle(page)
    wait_until(lambda: NAME in read_decisions(folder), timeout=30, message="the decision")
    assert read_decisions(folder)[NAME]["decision"] == "accept"
    assert read_decisions(folder)[NAME]["reviewer"] == "alice"
    page.get_by_text("Export accepted masks for the next run").click()
    page.get_by_role("button", name="Export", exact=True).click()
    _idle(page)
    page.get_by_text(re.compile("exported 1 volumes")).wait_for()
    assert (folder / "accepted" / "masks" / f"{NAME}.nii.gz").is_file()
    assert (folder / "accepted" / "images" / f"{NAME}.nii.gz").is_file()
