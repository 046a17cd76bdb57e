"""Segmentation masks in the dashboard: overlay drawing, mask review, export as mask labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from medflow.components.dicom import display as viewer
from medflow.components.ingest.manifest import read_manifest
from medflow.core.errors import InputError
from medflow.dashboard.labels_export import export_labels
from medflow.dashboard.store import ReviewError, ReviewStore, file_sha256
from medflow.workflows.review_samples import (
    record_mask_prediction,
    seed_masks,
    seed_store,
    threshold_mask,
    write_phantom,
)
from tests.support.dashboard_app import open_case
from tests.support.page_images import page_images

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
PASSWORD = "review-pass-1"
DISC = ["background", "disc"]


# --- drawing ---------------------------------------------------------------------------


def test_contour_of_a_filled_square_is_its_boundary():
    mask = np.zeros((12, 12), np.uint8)
    mask[3:9, 3:9] = 1
    ring = np.zeros((12, 12), bool)
    ring[3:9, 3:9] = True
    ring[4:8, 4:8] = False
    assert np.array_equal(viewer.mask_contour(mask), ring)
    ring[4:8, 4:8] = True
    ring[5:7, 5:7] = False
    assert np.array_equal(viewer.mask_contour(mask, width=2), ring)
    # A region touching the image edge has its boundary on the edge too.
    mask[:] = 0
    mask[:4, :4] = 1
    edge = viewer.mask_contour(mask)
    assert edge[0, :4].all() and edge[:4, 0].all() and edge[3, :4].all()
    assert not edge[1:3, 1:3].any() and edge.sum() == 12


def test_contour_separates_touching_classes():
    mask = np.zeros((8, 10), np.uint8)
    mask[2:6, 1:5] = 1
    mask[2:6, 5:9] = 2
    contour = viewer.mask_contour(mask)
    assert contour[3, 4] and contour[3, 5]  # both sides of the shared edge
    assert not contour[3, 2] and not contour[3, 7]  # interiors
    assert not contour[mask == 0].any()


def test_blend_mask_fill_contour_opacity_and_class_colours():
    image = np.full((20, 20), 100, np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    mask[2:10, 2:10] = 1
    mask[12:18, 12:18] = 2
    fill = viewer.blend_mask(image, mask, 1.0, "fill")
    assert fill.shape == (20, 20, 3) and fill.dtype == np.uint8
    assert tuple(fill[5, 5]) == viewer.class_color(1)
    assert tuple(fill[15, 15]) == viewer.class_color(2) != viewer.class_color(1)
    assert (fill[mask == 0] == 100).all()
    half = viewer.blend_mask(image, mask, 0.5, "fill")
    expected = (np.array(viewer.class_color(1)) * 0.5 + 50 + 0.5).astype(np.uint8)
    assert tuple(half[5, 5]) == tuple(expected)
    contour = viewer.blend_mask(image, mask, 1.0, "contour")
    assert tuple(contour[2, 5]) == viewer.class_color(1)  # on the boundary
    assert (contour[5, 5] == 100).all()  # inside: the image shows through
    assert (viewer.blend_mask(image, mask, 0.0, "fill") == 100).all()
    with pytest.raises(InputError, match="mask view must be one of"):
        viewer.blend_mask(image, mask, 0.5, "outline")
    with pytest.raises(InputError, match="differs from the image"):
        viewer.blend_mask(image, mask[:10], 0.5)


def test_load_mask_png_npy_and_bad_files(tmp_path):
    binary = np.zeros((6, 7), np.uint8)
    binary[1:4, 2:5] = 255
    Image.fromarray(binary).save(tmp_path / "m.png")
    assert np.array_equal(viewer.load_mask(tmp_path / "m.png"), binary // 255)
    classes = np.arange(42, dtype=np.uint8).reshape(6, 7) % 3
    np.save(tmp_path / "m.npy", classes)
    assert np.array_equal(viewer.load_mask(tmp_path / "m.npy"), classes)
    with pytest.raises(InputError, match="not found"):
        viewer.load_mask(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(InputError, match="cannot show the mask.*junk.png"):
        viewer.load_mask(tmp_path / "junk.png")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(InputError, match="shape"):
        viewer.load_mask(tmp_path / "cube.npy")
    with pytest.raises(InputError, match="is 6x7 but the image is 7x6"):
        viewer.check_mask_shape(classes, (7, 6), "m.npy")


# --- review store and labels export -----------------------------------------------------


@pytest.fixture()
def phantom_masks(tmp_path):
    """Two phantom CT images with the bone disc (> 200 HU) as their mask, PNG and .npy."""
    cases = []
    for i, suffix in enumerate((".png", ".npy")):
        image = tmp_path / "images" / f"seg{i}.dcm"
        write_phantom(image, seed=10 + i)
        cases.append((image, threshold_mask(image, tmp_path / "masks" / f"seg{i}{suffix}", 200)))
    return cases


@pytest.fixture()
def store(tmp_path):
    s = ReviewStore(f"sqlite:///{tmp_path}/review.db")
    yield s
    s.close()


def test_mask_reviews_record_the_mask_and_its_hash(store, phantom_masks, tmp_path):
    (img0, mask0), (img1, mask1) = phantom_masks
    a = record_mask_prediction(store, img0, mask0, labels=DISC, model="unet")
    b = record_mask_prediction(store, img1, mask1, labels=DISC, model="unet")
    with pytest.raises(ReviewError, match=f"correcting the mask of case {a} needs the corrected"):
        store.review(a, action="correct", reviewer="alice", label="background")
    store.review(a, action="accept", reviewer="alice", comment="good fit")
    [accepted] = store.reviewed_labels()
    assert (accepted.prediction_id, accepted.action) == (a, "accept")
    assert accepted.mask_ref == str(mask0.resolve())
    assert accepted.mask_sha256 == file_sha256(mask0)
    [audit] = [r for r in store.audit_records() if r.action == "accept"]
    assert str(mask0.resolve()) in audit.outcome and file_sha256(mask0)[:16] in audit.outcome
    assert "good fit" in audit.outcome and audit.model_name == "unet"
    # A mask that is gone cannot be accepted (nothing is written), but it can be rejected.
    mask1.unlink()
    with pytest.raises(ReviewError, match=f"cannot accept case {b}.*{mask1.name}"):
        store.review(b, action="accept", reviewer="alice")
    assert store.get_prediction(b).status == "pending"
    assert [r.action for r in store.audit_records()] == ["accept"]
    store.review(b, action="reject", reviewer="alice")
    assert store.get_prediction(b).status == "rejected"
    assert "file missing" in store.audit_records(action="reject")[0].outcome


def test_labels_export_includes_accepted_masks_only(store, phantom_masks, tmp_path):
    (img0, mask0), (img1, mask1) = phantom_masks
    a = record_mask_prediction(store, img0, mask0, labels=DISC, model="unet")
    b = record_mask_prediction(store, img1, mask1, labels=DISC, model="unet")
    store.review(a, action="accept", reviewer="alice")
    store.review(b, action="accept", reviewer="alice")
    store.review(b, action="reject", reviewer="bob")  # the latest review wins
    out = tmp_path / "export" / "labels.csv"
    assert export_labels(store, out) == 1
    [row] = list(csv.DictReader(out.open()))
    assert row["SOPInstanceUID"] == store.get_prediction(a).sop_instance_uid
    assert row["mask"] == str(mask0.resolve()) and "label" not in row
    assert row["_action"] == "accept" and row["_mask_sha256"] == file_sha256(mask0)
    # The next training run reads it as a mask-only manifest, and gets the reviewed mask.
    manifest = read_manifest(out)
    assert manifest.label_columns == [] and list(manifest.masks) == [row["SOPInstanceUID"]]
    np.testing.assert_array_equal(
        viewer.load_mask(manifest.masks[row["SOPInstanceUID"]]), viewer.load_mask(mask0)
    )
    # A mask file overwritten after it was accepted is not exported as the reviewed label.
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask0)
    with pytest.raises(InputError, match="changed after it was accepted"):
        export_labels(store, tmp_path / "again.csv")
    assert not (tmp_path / "again.csv").exists()
    # Classification labels and masks do not go into one manifest.
    seed_store(store, tmp_path / "cls", 1)
    cls = store.list_queue(model_name="cxr")[0].id
    store.review(cls, action="accept", reviewer="alice")
    with pytest.raises(InputError, match="mix classification labels and segmentation masks"):
        export_labels(store, tmp_path / "mixed.csv")
    assert export_labels(store, tmp_path / "cls.csv", model_name="cxr") == 1


def test_sample_segmentation_cases_use_real_masks(store, tmp_path, shared_data):
    ids = seed_masks(store, tmp_path / "sample", hc18_dir=shared_data / "hc18", n=2)
    for pid in ids:
        pred = store.get_prediction(pid)
        assert pred.task == "segmentation" and pred.model_name == "sample-reference-masks"
        study = viewer.load_study(pred.image_ref)
        mask = viewer.load_mask(pred.mask_ref)
        viewer.check_mask_shape(mask, study.frames.shape[1:3], pred.mask_ref)
        assert set(np.unique(mask)) == {0, 1}
        assert pred.scores == pytest.approx([1 - mask.mean(), mask.mean()])
        # The HC18 annotation as imported, unchanged.
        source = (
            shared_data / "hc18" / "training_set" / f"{Path(pred.mask_ref).stem}_Annotation.png"
        )
        expected = np.asarray(Image.open(source).convert("L")) > 127
        np.testing.assert_array_equal(mask.astype(bool), expected)


# --- the review page ---------------------------------------------------------------------


@pytest.fixture()
def app_env(tmp_path, monkeypatch, store, phantom_masks):
    monkeypatch.setenv("MEDFLOW_STORE_URL", store.url)
    monkeypatch.setenv("MEDFLOW_WORKDIR", str(tmp_path / "workdir"))
    for name in ("MEDFLOW_MLMD_DB", "MEDFLOW_MLMD_CONFIG", "MEDFLOW_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    store.add_user("alice", PASSWORD, "reviewer")
    seg = [record_mask_prediction(store, i, m, labels=DISC, model="unet") for i, m in phantom_masks]
    cls = seed_store(store, tmp_path / "cls", 1)
    return store, seg, cls


def _open(case: int) -> AppTest:
    return open_case(case, "alice", PASSWORD)


def _rendered(at: AppTest) -> np.ndarray:
    """The pixels of the page's image as the browser receives them (decoded)."""
    [image] = page_images(at)
    return image


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(axis=2) > 24


def test_mask_overlay_and_its_controls_change_the_rendered_image(app_env, phantom_masks):
    store, seg, cls = app_env
    at = _open(seg[0])
    mask = viewer.load_mask(phantom_masks[0][1]).astype(bool)
    assert at.radio(key=f"overlay_{seg[0]}").value == "mask"
    assert at.radio(key="review_mask_view").options == ["fill", "contour"]
    assert any("disc (" in m.value and "% of the image" in m.value for m in at.markdown)
    assert [b.label for b in at.button][:2] == ["Accept mask (A)", "Reject mask (X)"]
    assert not any("Correct label" in b.label for b in at.button)
    fill = _rendered(at)  # the defaults: fill, opacity 0.4
    at.slider(key="review_opacity").set_value(0.9).run()
    strong = _rendered(at)
    at.radio(key="review_mask_view").set_value("contour").run()
    contour = _rendered(at)
    at.radio(key=f"overlay_{seg[0]}").set_value("none").run()
    plain = _rendered(at)
    # Fill colours the mask (JPEG blurs colour edges by a pixel or so) and nothing else.
    filled = _changed(fill, plain)
    assert filled[mask].mean() > 0.9 and filled[~mask].mean() < 0.05
    assert np.abs(strong - plain)[mask].mean() > 1.5 * np.abs(fill - plain)[mask].mean()
    # Contour colours the mask's boundary; its inside shows the image.
    outline = _changed(contour, plain)
    ring = viewer.mask_contour(mask.astype(np.uint8))
    assert outline[ring].mean() > 0.8 and outline[mask & ~ring].mean() < 0.2
    assert 0 < outline.sum() < 0.5 * filled.sum()
    assert not at.exception and not at.error
    # A classification case has no mask controls and keeps its three actions.
    at.selectbox(key="review_case").set_value(cls[0]).run()
    assert not any(r.key == "review_mask_view" for r in at.radio)
    assert "Correct label (L)" in [b.label for b in at.button]


def test_accept_and_reject_masks_on_the_page_are_audited(app_env, tmp_path):
    store, seg, _ = app_env
    at = _open(seg[0])
    at.text_input(key="review_comment").input("tight fit")
    at.button(key="review_accept").click().run()
    assert not at.exception and f"Case {seg[0]}: accept saved." in [s.value for s in at.success]
    at.selectbox(key="review_case").set_value(seg[1]).run()
    at.button(key="review_reject").click().run()
    assert not at.exception and not at.error
    assert store.get_prediction(seg[0]).status == "accepted"
    assert store.get_prediction(seg[1]).status == "rejected"
    actions = {r.action: r for r in store.audit_records() if r.prediction_id and r.action != "view"}
    assert set(actions) == {"accept", "reject"}
    assert actions["accept"].actor == "alice" and "tight fit" in actions["accept"].outcome
    assert actions["accept"].prediction_id == seg[0] and "mask " in actions["accept"].outcome
    assert export_labels(store, tmp_path / "out.csv", model_name="unet") == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.unlink(), "not found"),
        (lambda p: p.write_bytes(b"garbage"), "cannot show the mask"),
        (lambda p: np.save(p, np.ones((32, 32), np.uint8)), "is 32x32 but the image is 64x64"),
    ],
)
def test_missing_or_bad_mask_is_a_message_not_a_crash(app_env, phantom_masks, damage, message):
    store, seg, _ = app_env
    damage(phantom_masks[1][1])  # the .npy mask of the second case
    at = _open(seg[1])
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert len(page_images(at)) == 1  # the image itself is still shown
    assert at.button(key="review_accept").disabled
    assert any("Accept needs a mask you can see" in w.value for w in at.warning)
    at.button(key="review_reject").click().run()
    assert not at.exception and store.get_prediction(seg[1]).status == "rejected"


def test_sample_data_command(tmp_path, shared_data, capsys):
    from medflow.cli import main

    url = f"sqlite:///{tmp_path}/review.db"
    args = ["dashboard", "--store-url", url, "sample-data", "--out", str(tmp_path / "s")]
    assert main([*args, "--hc18", str(shared_data / "hc18")]) == 0
    assert "6 phantom classification case(s) and 3 segmentation case(s)" in capsys.readouterr().out
    store = ReviewStore(url)
    try:
        masks = [p for p in store.list_queue(status="all") if p.task == "segmentation"]
        assert len(masks) == 3 and {p.model_name for p in masks} == {"sample-reference-masks"}
        assert all(Path(p.mask_ref).is_file() and Path(p.image_ref).is_file() for p in masks)
    finally:
        store.close()
    assert main([*args, "--hc18", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--hc18" in err and "is not a folder" in err


def test_exported_masks_are_the_next_ingestion_labels(store, phantom_masks, tmp_path):
    from medflow.components.dicom.deid import DeidKey
    from medflow.components.ingest.engine import IngestOptions, ingest
    from medflow.core import features as F
    from medflow.core.pixel_spec import PixelSpec
    from tests.unit.test_ingest import read_examples

    (img0, mask0), (img1, mask1) = phantom_masks
    a = record_mask_prediction(store, img0, mask0, labels=DISC, model="unet")
    b = record_mask_prediction(store, img1, mask1, labels=DISC, model="unet")
    store.review(a, action="accept", reviewer="alice")
    store.review(b, action="reject", reviewer="alice")
    export_labels(store, tmp_path / "labels.csv")
    report = ingest(
        img0.parent,
        tmp_path / "ingested",
        DeidKey(b"0123456789abcdef-test"),
        read_manifest(tmp_path / "labels.csv"),
        IngestOptions(pixel=PixelSpec(size=(64, 64))),
    )
    assert (report.counts["written"], report.counts["quarantined"]) == (1, 1)
    [example] = [r for split in read_examples(tmp_path / "ingested").values() for r in split]
    mask = np.frombuffer(example[F.MASK], np.uint8).reshape(64, 64)
    np.testing.assert_array_equal(mask, viewer.load_mask(mask0))  # the accepted mask, as is


def test_masks_recorded_by_medflow_predict_show_and_export(store, tmp_path):
    """The mask_ref contract with ``medflow predict --record`` (serving.overlays.save_masks):
    a mask PNG on the source grid, shown on the review page's image and exported as accepted.

    The "model output" here is a threshold of the phantom, passed through the real writer.
    """
    import pydicom

    from medflow.components.tasks.segmentation.overlays import save_masks
    from medflow.components.tasks.segmentation.results import MaskPrediction
    from medflow.workflows.predict import record

    image = tmp_path / "img.dcm"
    write_phantom(image, seed=3)
    ds = pydicom.dcmread(image)
    mask = (viewer.load_study(image).frames[0] > 200).astype(np.uint8)
    probabilities = np.where(mask == 1, 0.9, 0.1).astype(np.float32)
    pred = MaskPrediction(
        path=str(image), frame_index=0, sop_instance_uid=ds.SOPInstanceUID,
        study_instance_uid=ds.StudyInstanceUID, series_instance_uid=ds.SeriesInstanceUID,
        model_name="unet", model_version=2, labels=["background", "disc"], mask=mask,
        probabilities=probabilities, pixel_spacing=None, foreground_pixels=int(mask.sum()),
        area_mm2=None, mean_probability=0.9,
    )  # fmt: skip
    [saved] = save_masks([pred], tmp_path / "masks")
    [pid] = record([saved], store.url)
    case = store.get_prediction(pid)
    assert case.task == "segmentation" and case.scores == pytest.approx([0.1, 0.9])
    shown = viewer.load_mask(case.mask_ref)
    viewer.check_mask_shape(shown, viewer.load_study(case.image_ref).frames.shape[1:3], "m")
    np.testing.assert_array_equal(shown, mask)
    store.review(pid, action="accept", reviewer="alice")
    assert export_labels(store, tmp_path / "labels.csv") == 1
    assert read_manifest(tmp_path / "labels.csv").masks == {
        ds.SOPInstanceUID: str(Path(case.mask_ref).resolve())
    }
