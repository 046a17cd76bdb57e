"""The review page for radiologists (issue 24, item 10) and the Models page fixes (item 6):
signed sessions, mask correction stored and exported, queue rows by mask classes, the
viewer's data, pseudonymised context, metric tiles and informative per-slice charts.

The browser side (drawing with the mouse, reload, window/level by drag) is in
``tests/e2e/test_browser_dashboard.py``.
"""

from __future__ import annotations

import csv
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from medflow.components.dicom import display
from medflow.dashboard.config import APP_SCRIPT
from medflow.dashboard.labels_export import export_labels
from medflow.dashboard.records import ReviewError
from medflow.dashboard.sessions import ENV_SECRET
from medflow.dashboard.store import ReviewStore, file_sha256
from medflow.dashboard.views import case_context, mask_editor, viewer
from medflow.dashboard.views.models import informative_slices, metric_text
from medflow.workflows import review_samples as samples
from tests.support.dashboard_app import open_case, sign_in
from tests.support.page_images import viewer_payloads

APP = str(APP_SCRIPT)
PASSWORD = "review-page-pass-1"
DISC = ["background", "disc"]


@pytest.fixture()
def store(tmp_path):
    s = ReviewStore(f"sqlite:///{tmp_path}/review.db")
    yield s
    s.close()


@pytest.fixture()
def seg_case(store, tmp_path):
    image = tmp_path / "seg.dcm"
    samples.write_phantom(image, seed=3)
    mask = samples.threshold_mask(image, tmp_path / "masks" / "seg.png", 200)
    return (
        samples.record_mask_prediction(store, image, mask, labels=DISC, model="unet"),
        image,
        mask,
    )


# --- signed sessions -------------------------------------------------------------------------


def test_session_token_survives_a_new_store_and_refuses_tampering(store, tmp_path):
    store.add_user("alice", PASSWORD, "reviewer")
    token = store.issue_session("alice")
    # A reload is a new connection: another store object on the same database verifies it.
    again = ReviewStore(store.url)
    assert again.session_user(token).username == "alice"
    session_id, name, expiry, signature = token.split(".")
    forged = [
        f"{session_id}.{name}.{int(expiry) + 3600}.{signature}",  # longer life
        f"{session_id}.{name}.{expiry}.{signature[:-2]}AA",  # another signature
        f"{session_id}.Ym9i.{expiry}.{signature}",  # another user ("bob")
        "", "not-a-token", f"{token}.extra",
    ]  # fmt: skip
    assert [again.session_user(t) for t in forged] == [None] * len(forged)
    again.close()


def test_expired_revoked_and_deleted_users_sessions_are_refused(store, monkeypatch):
    store.add_user("alice", PASSWORD, "reviewer")
    assert store.session_user(store.issue_session("alice", timedelta(seconds=-1))) is None
    token = store.issue_session("alice")
    store.revoke_session(token)
    assert store.session_user(token) is None
    ghost = store.issue_session("ghost")  # signed, but no such user
    assert store.session_user(ghost) is None
    # A secret from the environment signs instead of the store's own key.
    token = store.issue_session("alice")
    monkeypatch.setenv(ENV_SECRET, "another key entirely")
    assert store.session_user(token) is None
    assert store.session_user(store.issue_session("alice")).username == "alice"


def test_sign_in_issues_a_cookie_and_sign_out_revokes_it(store, tmp_path, monkeypatch):
    store.add_user("alice", PASSWORD, "reviewer")
    monkeypatch.setenv("MEDFLOW_STORE_URL", store.url)
    monkeypatch.setenv("MEDFLOW_WORKDIR", str(tmp_path / "work"))
    at = sign_in(AppTest.from_file(APP, default_timeout=60).run(), "alice", PASSWORD)
    token = at.session_state["medflow_session_token"]
    assert store.session_user(token).username == "alice"
    scripts = [f.proto.srcdoc for f in at.get("iframe") if "d.cookie" in f.proto.srcdoc]
    assert len(scripts) == 1 and f"medflow_session={token}; Path=/" in scripts[0]
    assert "SameSite=Strict" in scripts[0]
    at.sidebar.button[0].click().run()  # sign out
    assert store.session_user(token) is None
    cleared = [f.proto.srcdoc for f in at.get("iframe") if "d.cookie" in f.proto.srcdoc]
    assert cleared and "medflow_session=; Path=/; Max-Age=0" in cleared[-1]
    assert [r.action for r in store.audit_records()][:2] == ["logout", "login"]


# --- mask correction -------------------------------------------------------------------------


def _canvas(shape, strokes) -> np.ndarray:
    """An RGBA canvas picture: ``strokes`` are (rows slice, cols slice, RGB)."""
    rgba = np.zeros((*shape, 4), np.uint8)
    for rows, cols, rgb in strokes:
        rgba[rows, cols, :3] = rgb
        rgba[rows, cols, 3] = 255
    return rgba


def test_drawn_strokes_become_classes_on_the_mask_grid():
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 10:20] = 1
    red = display.class_color(1)
    # The canvas is twice the mask's size; a brush stroke paints class 1, the eraser 0,
    # and an anti-aliased edge (half-transparent, off-colour) is not drawn.
    picture = _canvas((80, 120), [(slice(60, 70), slice(0, 40), red),
                                  (slice(20, 30), slice(20, 40), (0, 0, 0))])  # fmt: skip
    picture[0:4, 100:120] = (*[max(c - 30, 0) for c in red], 100)  # NumPy 2: no wrap-around
    new = mask_editor.corrected_mask(mask, picture, 2)
    expected = mask.copy()
    expected[30:35, 0:20] = 1
    expected[10:15, 10:20] = 0
    np.testing.assert_array_equal(new, expected)


def test_corrected_mask_is_saved_recorded_audited_and_exported(store, seg_case, tmp_path):
    case, _, original = seg_case
    mask = display.load_mask(original)
    new = mask.copy()
    new[:8, :8] = 1
    path = mask_editor.save_corrected_mask(tmp_path / "corrected", case, new)
    assert path.is_absolute() and [p.name for p in path.parent.iterdir()] == [path.name]
    np.testing.assert_array_equal(np.asarray(Image.open(path)), new)  # class indices
    store.review(case, action="correct", reviewer="alice", mask_ref=path, comment="rim")
    assert store.get_prediction(case).status == "corrected"
    [label] = store.reviewed_labels()
    assert (label.action, label.mask_ref, label.mask_sha256) == (
        "correct", str(path), file_sha256(path))  # fmt: skip
    [audit] = store.audit_records(action="correct")
    assert "corrected mask, saved as" in audit.outcome and str(path) in audit.outcome
    assert "rim" in audit.outcome and audit.actor == "alice"
    out = tmp_path / "labels.csv"
    assert export_labels(store, out, model_name="unet") == 1
    [row] = list(csv.DictReader(out.open()))
    assert (row["mask"], row["_action"]) == (str(path), "correct")
    # The exported mask is what the next run reads as this image's label.
    np.testing.assert_array_equal(display.load_mask(row["mask"]), new)
    # A corrected file changed after the review is refused, as an accepted one is.
    Image.fromarray(mask).save(path)
    with pytest.raises(Exception, match="changed after it was corrected"):
        export_labels(store, tmp_path / "again.csv", model_name="unet")


def test_a_corrected_mask_file_fits_only_a_mask_correction(store, seg_case, tmp_path):
    case, _, original = seg_case
    [cls] = samples.seed_store(store, tmp_path / "images", 1)
    with pytest.raises(ReviewError, match="not with 'accept'"):
        store.review(case, action="accept", reviewer="a", mask_ref=original)
    with pytest.raises(ReviewError, match="on a classification case"):
        store.review(cls, action="correct", reviewer="a", label=1, mask_ref=original)
    with pytest.raises(ReviewError, match="cannot accept|cannot be read|No such file"):
        store.review(case, action="correct", reviewer="a", mask_ref=tmp_path / "gone.png")
    assert store.audit_records(action="correct") == []


# --- the page: queue rows, viewer data, context -------------------------------------------------


def _open(store, tmp_path, monkeypatch, case: int) -> AppTest:
    store.add_user("alice", PASSWORD, "reviewer")
    monkeypatch.setenv("MEDFLOW_STORE_URL", store.url)
    monkeypatch.setenv("MEDFLOW_WORKDIR", str(tmp_path / "work"))
    return open_case(case, "alice", PASSWORD)


def test_segmentation_rows_name_their_classes_and_the_page_has_no_long_uids(
    store, seg_case, tmp_path, monkeypatch
):
    case, image, original = seg_case
    share = 100 * display.load_mask(original).mean()
    at = _open(store, tmp_path, monkeypatch, case)
    picker = at.selectbox(key="review_case")
    label = picker.format_func(case)
    assert f"disc {share:.1f} %" in label and "background" not in label
    pred = store.get_prediction(case)
    shown = "\n".join(m.value for m in at.main.markdown if "Identifiers" not in m.value)
    assert pred.sop_instance_uid not in label
    assert "**Patient** P-" in shown and "**Study** ST-" in shown and "**Series** SE-" in shown
    assert pred.study_instance_uid not in shown.split("Study `")[0]
    [data] = viewer_payloads(at)
    assert data["layer"] and data["grey"] and data["rows"] == 64
    # Drawing: the toggle swaps the viewer for the canvas and its Save button.
    at.toggle(key=f"edit_mask_{case}").set_value(True).run()
    assert not at.exception and viewer_payloads(at) == []
    assert "Save corrected mask (S)" in [b.label for b in at.button]
    at.button(key="mask_save").click().run()  # nothing drawn: said, nothing recorded
    assert any("nothing drawn yet" in e.value for e in at.error)
    assert store.get_prediction(case).status == "pending"


def test_pseudonyms_are_stable_short_and_keyed():
    a = case_context.pseudonym(b"k1", "P", "PAT-000123")
    assert a == case_context.pseudonym(b"k1", "P", "PAT-000123") and len(a) == 8
    assert a != case_context.pseudonym(b"k2", "P", "PAT-000123")
    assert a != case_context.pseudonym(b"k1", "P", "PAT-000124")
    assert "PAT-000123" not in a


def test_overlay_layer_reproduces_the_blend_over_any_image():
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 48), np.uint8)
    mask[5:20, 8:30] = 1
    mask[22:30, 30:40] = 2

    def blend(pixels):
        return display.blend_mask(pixels, mask, 0.4, "fill")

    layer = viewer.overlay_layer(blend, mask.shape)
    grey = rng.integers(0, 256, mask.shape, dtype=np.uint8)
    alpha = layer[..., 3:] / 255.0
    composite = grey[..., None] * (1 - alpha) + layer[..., :3] * alpha
    assert np.abs(composite - blend(grey)).max() <= 2
    assert (layer[..., 3] == 0).sum() == (mask == 0).sum()  # background stays clear


def test_viewer_payload_shows_the_default_window_of_the_frame(tmp_path):
    path = tmp_path / "ct.dcm"
    samples.write_phantom(path, seed=5)
    study = display.load_study(path)
    data = viewer.payload(study, 0, key="1", layer=None, spacing=(0.5, 0.5), caption="c")
    expected = display.render(study, 0, *study.preset_window(study.presets()[0]))
    shown = viewer.decode_payload(data)[..., 0].astype(int)
    assert np.abs(shown - expected).max() <= 1
    assert data["spacing"] == [0.5, 0.5] and "CT bone" in [p[0] for p in data["presets"]]


# --- the Models page -----------------------------------------------------------------------------


def test_per_slice_chart_leaves_out_single_valued_features_and_equal_bars():
    one_value = pd.DataFrame({"auc": [0.9, 0.9]}, index=["sex=UNKNOWN", "site=A"])
    values, why = informative_slices(one_value, "auc")
    assert values is None and "more than one value" in why
    equal = pd.DataFrame({"auc": [0.8, 0.8, 0.7]}, index=["sex=F", "sex=M", "site=A"])
    values, why = informative_slices(equal, "auc")
    assert values is None and "same auc (0.800)" in why
    mixed = pd.DataFrame({"auc": [0.8, 0.9, 0.7]}, index=["sex=F", "sex=M", "site=A"])
    values, _ = informative_slices(mixed, "auc")
    assert list(values.index) == ["sex=F", "sex=M"]


def test_metric_values_read_as_counts_or_three_decimals():
    assert [metric_text(v) for v in (516.0, 0.9134, 1.0, 0.0)] == ["516", "0.913", "1", "0.000"]
