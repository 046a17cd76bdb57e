"""``medflow predict --pairs`` against the embedded server with an exported registration
model: the table/JSON with Dice before/after and folding, the warped image as a derived
DICOM on the fixed image's grid referencing both sources (read back), the field beside it,
and the before/after overlay (issue 18)."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from PIL import Image

from medflow.cli import main
from medflow.core.pixel_spec import PixelSpec

SIZE = (32, 32)


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    import keras

    from medflow.components.pusher.publish import publish
    from medflow.components.tasks.registration.export import export_registration_model
    from medflow.components.tasks.registration.model import build_registration_model

    keras.utils.set_random_seed(5)
    model = build_registration_model(SIZE, width=4, depth=2, integration_steps=3)
    export = tmp_path_factory.mktemp("export") / "serving"
    export_registration_model(model, str(export), SIZE, {})
    base = tmp_path_factory.mktemp("models")
    contract = {
        "model_name": "reg",
        "task": "registration",
        "labels": ["background", "foreground"],
        "preprocessing": PixelSpec(size=SIZE, channels=1, window=None).to_dict(),
    }
    publish(str(export), str(base / "reg"), contract)
    return base


def _pair_folder(tmp_path):
    from pydicom.filewriter import dcmwrite

    from medflow.components.ingest.hc18_import import _instance

    yy, xx = np.meshgrid(np.arange(48), np.arange(64), indexing="ij")
    names = {}
    for name, cx in (("fixed", 30), ("moving", 34)):
        blob = ((yy - 24) ** 2 + (xx - cx) ** 2 < 144).astype(np.uint8)
        ds = _instance((blob * 200 + 20).astype(np.uint8), name, "007", 0.5)
        dcmwrite(tmp_path / f"{name}.dcm", ds, enforce_file_format=True)
        Image.fromarray(blob * 255).save(tmp_path / f"{name}_mask.png")
        names[name] = ds
    (tmp_path / "pairs.csv").write_text(
        "fixed,moving,fixed_mask,moving_mask\nfixed.dcm,moving.dcm,fixed_mask.png,moving_mask.png\n"
    )
    return names


def test_predict_pairs_json_warped_dicom_field_and_overlay(server, tmp_path, capsys):
    sources = _pair_folder(tmp_path)
    code = main(
        [
            "predict", "--pairs", str(tmp_path / "pairs.csv"), "--server",
            f"127.0.0.1:{server.grpc_port}", "--model", "reg", "--json",
            "--warp-out", str(tmp_path / "warped"), "--overlay-out", str(tmp_path / "png"),
        ]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    (pred,) = doc["predictions"]
    assert pred["fixed"].endswith("fixed.dcm") and pred["moving"].endswith("moving.dcm")
    # an untrained model is near the identity: Dice after ~ Dice before (< 1: the blobs differ)
    assert 0.5 < pred["dice_before"] < 0.95
    assert pred["dice_after"] == pytest.approx(pred["dice_before"], abs=0.05)
    # 4 source columns of 0.5 mm apart: HD95 ~ 2 mm (on the 32x32 grid of 2-column pixels)
    assert 1.0 <= pred["hd95_before_mm"] <= 3.0
    assert pred["hd95_after_mm"] == pytest.approx(pred["hd95_before_mm"], abs=1.0)
    assert pred["folding_fraction"] == 0.0
    derived = pydicom.dcmread(pred["warped_dicom"])
    fixed, moving = sources["fixed"], sources["moving"]
    assert (derived.Rows, derived.Columns) == (fixed.Rows, fixed.Columns) == (48, 64)
    assert list(derived.PixelSpacing) == list(fixed.PixelSpacing)
    assert derived.StudyInstanceUID == fixed.StudyInstanceUID
    assert derived.SeriesInstanceUID not in (fixed.SeriesInstanceUID, moving.SeriesInstanceUID)
    refs = [r.ReferencedSOPInstanceUID for r in derived.ReferencedImageSequence]
    assert refs == [fixed.SOPInstanceUID, moving.SOPInstanceUID]
    assert derived.SourceImageSequence[0].ReferencedSOPInstanceUID == moving.SOPInstanceUID
    assert list(derived.ImageType) == ["DERIVED", "SECONDARY", "REGISTERED"]
    # near-identity warp: the derived pixels are the moving image's, on the fixed grid
    values = derived.pixel_array * float(derived.RescaleSlope) + float(derived.RescaleIntercept)
    source = moving.pixel_array.astype(np.float32)
    assert np.mean(np.abs(values - source)) < 12.0
    field = np.load(pred["field"])
    assert field.shape == (*SIZE, 2) and field.dtype == np.float32
    overlay = np.asarray(Image.open(pred["overlay"]))
    assert overlay.ndim == 3 and overlay.shape[1] > overlay.shape[0]  # before | after


def test_predict_pairs_table_and_a_missing_image_is_reported(server, tmp_path, capsys):
    _pair_folder(tmp_path)
    (tmp_path / "pairs.csv").write_text("fixed,moving\nfixed.dcm,moving.dcm\nfixed.dcm,gone.dcm\n")
    code = main(
        ["predict", "--pairs", str(tmp_path / "pairs.csv"), "--server",
         f"127.0.0.1:{server.grpc_port}", "--model", "reg"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "dice_before" in captured.out and "folding" in captured.out
    assert "hd95_after_mm" in captured.out
    assert "line 3: moving image 'gone.dcm' is no readable DICOM file" in captured.err


def test_record_puts_the_pair_in_the_review_queue_with_the_warped_image(server, tmp_path, capsys):
    from medflow.components.tasks.registration.review import REVIEW, checkerboard
    from medflow.dashboard.store import ReviewStore

    sources = _pair_folder(tmp_path)
    url = f"sqlite:///{tmp_path}/review.db"
    code = main(
        ["predict", "--pairs", str(tmp_path / "pairs.csv"), "--server",
         f"127.0.0.1:{server.grpc_port}", "--model", "reg", "--json", "--record",
         "--store-url", url, "--mask-dir", str(tmp_path / "review")]
    )  # fmt: skip
    assert code == 0
    (pred,) = json.loads(capsys.readouterr().out)["predictions"]
    store = ReviewStore(url)
    try:
        review_id = store.review(pred["review_id"], action="accept", reviewer="ana")
        with pytest.raises(Exception, match="accept or reject it, not 'correct'"):
            store.review(pred["review_id"], action="correct", reviewer="ana", label=0)
    finally:
        store.close()
    assert review_id > 0
    warped = sorted((tmp_path / "review").glob("warped-*.png"))
    assert len(warped) == 1
    image = np.asarray(Image.open(warped[0]))
    assert image.shape == (sources["fixed"].Rows, sources["fixed"].Columns)
    fixed = sources["fixed"].pixel_array.astype(np.uint8)
    board = checkerboard(fixed, image, tile=8)
    assert board.shape == (*image.shape, 3)
    assert (board[:8, :8, 0] == fixed[:8, :8]).all() and (
        board[:8, 8:16, 0] == image[:8, 8:16]
    ).all()
    assert REVIEW.action("accept") and REVIEW.action("correct") is None


def test_push_stores_the_warped_image_in_the_fixed_images_study(
    server, tmp_path, monkeypatch, capsys
):
    """--pairs --dicomweb --push: a real Orthanc gets the derived warped image in the fixed
    image's study (the push path of the other tasks: the task's push, STOW-RS); read back
    over QIDO/WADO it references both sources on the fixed image's grid."""
    from medflow.components.dicom.dicomweb import Credentials, DicomwebSource, Query, RetryPolicy
    from medflow.components.dicom.reader import parse
    from tests.integration.orthanc import orthanc_server

    sources = _pair_folder(tmp_path)
    fixed, moving = sources["fixed"], sources["moving"]
    code = main(["predict", "--pairs", str(tmp_path / "pairs.csv"), "--server",
                 f"127.0.0.1:{server.grpc_port}", "--model", "reg", "--push"])  # fmt: skip
    assert code != 0
    assert "with --pairs it needs --dicomweb URL" in capsys.readouterr().err
    for pacs in orthanc_server(tmp_path / "orthanc"):
        retry = RetryPolicy(attempts=2, backoff_s=0.05, timeout_s=10)
        source = DicomwebSource(pacs.dicomweb_url, Credentials(*pacs.auth), retry=retry)
        assert source.store([(tmp_path / f"{n}.dcm").read_bytes() for n in sources]) == 2
        monkeypatch.setenv("MEDFLOW_DICOMWEB_USERNAME", pacs.auth[0])
        monkeypatch.setenv("MEDFLOW_DICOMWEB_PASSWORD", pacs.auth[1])
        code = main(
            ["predict", "--pairs", str(tmp_path / "pairs.csv"), "--server",
             f"127.0.0.1:{server.grpc_port}", "--model", "reg", "--json",
             "--dicomweb", pacs.dicomweb_url, "--push"]
        )  # fmt: skip
        out, err = capsys.readouterr()
        assert code == 0, err
        (pushed,) = json.loads(out)["pushed"]
        assert pushed["kind"] == "REGISTERED"
        assert pushed["study_instance_uid"] == fixed.StudyInstanceUID
        assert pushed["fixed_sop_instance_uid"] == fixed.SOPInstanceUID
        assert pushed["moving_sop_instance_uid"] == moving.SOPInstanceUID
        refs = source.search(Query(study_uids=(str(fixed.StudyInstanceUID),)))
        (ref,) = [r for r in refs if r.sop_uid == pushed["sop_instance_uid"]]
        assert fixed.SOPInstanceUID in {r.sop_uid for r in refs}  # beside its fixed image
        derived = parse(source.retrieve(ref), "pushed image")
        assert list(derived.ImageType) == ["DERIVED", "SECONDARY", "REGISTERED"]
        assert (derived.Rows, derived.Columns) == (fixed.Rows, fixed.Columns)
        assert [r.ReferencedSOPInstanceUID for r in derived.ReferencedImageSequence] == [
            fixed.SOPInstanceUID,
            moving.SOPInstanceUID,
        ]
        assert derived.pixel_array.shape == (48, 64)
