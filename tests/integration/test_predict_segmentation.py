"""``medflow predict`` with a segmentation model on the embedded server (real gRPC, real files).

The model is a small untrained U-Net (components.models.unet) exported through the real
export code (``seg_export.export_segmentation_model`` -> ``save_with_transform``) and
published with the Pusher's ``publish`` (contract.json with task=segmentation). Only the
Transform graph is stood in for: a fixed z-score on the decoded image bytes instead of a
TFT analyze run (which would take minutes); the serving signature runs it exactly where it
runs the real one.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medflow.cli import main
from medflow.components.dicom.pixels import load_model_input
from medflow.core.pixel_spec import PixelSpec
from tests.integration.test_serving_helpers import start_server
from tests.support.fixed_transform import FixedTransform

SIZE = (32, 32)
LABELS = ["background", "structure"]


def publish_segmenter(model, tmp_path_factory, threshold: float = 0.5, **contract):
    """A model base folder with ``model`` exported (fixed z-score, mask ``threshold``) and
    published as ``seg`` (``contract``: extra contract fields)."""
    from medflow.components.pusher.publish import publish
    from medflow.components.tasks.segmentation.export import export_segmentation_model

    export = tmp_path_factory.mktemp("export") / "serving"
    transform = FixedTransform((*SIZE, 1), 0.5, 0.25)
    export_segmentation_model(model, transform, str(export), (*SIZE, 1), {}, threshold)
    base = tmp_path_factory.mktemp("models")
    contract = {
        "model_name": "seg",
        "task": "segmentation",
        "labels": LABELS,
        "preprocessing": PixelSpec(size=SIZE, channels=1, window=None).to_dict(),
        **contract,
    }
    publish(str(export), str(base / "seg"), contract)
    return base


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    import keras

    from medflow.components.tasks.segmentation.unet import build_unet

    keras.utils.set_random_seed(3)
    return publish_segmenter(build_unet((*SIZE, 1), depth=2, width=4), tmp_path_factory)


def _sc(path, rows=48, cols=90, spacing=(0.5, 0.25)):
    """An ultrasound still as Secondary Capture: non-square, anisotropic, no position."""
    from medflow.components.ingest.hc18_import import _instance

    rr, cc = np.mgrid[:rows, :cols]
    pixels = (40 + 160 * (((rr - 20) / 14) ** 2 + ((cc - 50) / 30) ** 2 <= 1)).astype(np.uint8)
    ds = _instance(pixels, path.stem, "001", spacing[0])
    ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


@pytest.fixture()
def dicoms(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    paths = []
    for i in range(2):  # a two-slice CT series
        ds = copy.deepcopy(ct)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = hd.UID()
        x, y, z = (float(v) for v in ct.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * i]
        ds.PixelData = np.roll(ds.pixel_array, 9 * i, axis=1).tobytes()
        path = folder / f"ct{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    paths.append(shutil.copy(get_testdata_file("MR_small.dcm"), folder / "mr.dcm"))
    paths.append(_sc(folder / "us.dcm"))
    return paths


@functools.cache
def _loaded(path: str):
    import tensorflow as tf

    return tf.saved_model.load(path)


def _reference(model_base, path) -> tuple[np.ndarray, np.ndarray]:
    """In-process SavedModel output for ``path`` and the same resampled to the source grid,
    computed here from the Geometry ingestion records (pad, scale, output spacing)."""
    import tensorflow as tf

    spec = PixelSpec(size=SIZE, channels=1)
    array, geometry = load_model_input(path, spec)[0]
    probs = _loaded(str(next((model_base / "seg").iterdir()))).signatures["serving_default"](
        image=tf.constant(array[None])
    )
    probs = probs["probabilities"].numpy()[0]
    rows, cols = geometry.orig_rows, geometry.orig_cols
    top, left = geometry.pad
    height = round(rows * geometry.scale)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if geometry.pixel_spacing and "PixelSpacing" in ds:
        width = round(float(ds.PixelSpacing[1]) * cols / geometry.pixel_spacing[1])
    else:
        width = round(cols * geometry.scale)
    crop = probs[top : top + height, left : left + width]
    back = np.asarray(Image.fromarray(crop, mode="F").resize((cols, rows), Image.BILINEAR))
    return probs, back


def test_client_returns_masks_on_the_source_grid(server, model_base, dicoms):
    from medflow.components.tasks.segmentation.results import MaskPrediction
    from medflow.serving.client import PredictionClient

    with PredictionClient(f"127.0.0.1:{server.grpc_port}") as client:
        results, rejected = client.predict_dicom(dicoms, "seg", batch_size=3)
    assert rejected == [] and len(results) == 4
    for pred, path in zip(results, dicoms, strict=True):
        assert isinstance(pred, MaskPrediction)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert pred.mask.shape == pred.probabilities.shape == (ds.Rows, ds.Columns)
        assert pred.labels == ["background", "foreground"]  # no contract: the default
        _, expected = _reference(model_base, path)
        # float32 round-off: up to 1.6e-5 on the next stack (TF 2.21, Pillow 13), 0 here; a
        # mapping off by one source pixel differs by ~0.1 (neighbouring probabilities differ so)
        np.testing.assert_allclose(pred.probabilities, expected, atol=1e-4)
        decided = np.abs(expected - 0.5) > 1e-4
        np.testing.assert_array_equal(pred.mask[decided], (expected >= 0.5)[decided])
        spacing = tuple(float(v) for v in ds.PixelSpacing)
        assert pred.foreground_pixels == int(pred.mask.sum()) > 0
        assert pred.area_mm2 == pytest.approx(pred.mask.sum() * spacing[0] * spacing[1])
        assert pred.mean_probability == pytest.approx(
            float(pred.probabilities[pred.mask > 0].mean()), abs=1e-6
        )
        assert pred.mean_probability >= 0.5


def test_cli_json_seg_out_overlays_and_record(server, model_base, dicoms, tmp_path, capsys):
    from medflow.dashboard.store import ReviewStore
    from medflow.serving.client import PredictionClient

    contract = next((model_base / "seg").iterdir()) / "contract.json"
    url = f"sqlite:///{tmp_path}/review.db"
    code = main(
        [
            "predict",
            *map(str, dicoms),
            "--server",
            f"127.0.0.1:{server.grpc_port}",
            "--model",
            "seg",
            "--contract",
            str(contract),
            "--json",
            "--seg-out",
            str(tmp_path / "seg"),
            "--overlay-out",
            str(tmp_path / "overlays"),
            "--record",
            "--store-url",
            url,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    preds = doc["predictions"]
    assert [p["path"] for p in preds] == [str(p.resolve()) for p in dicoms]
    with PredictionClient(f"127.0.0.1:{server.grpc_port}") as client:
        direct, _ = client.predict_dicom(dicoms, "seg")
    for p, d in zip(preds, direct, strict=True):
        assert p["task"] == "segmentation" and p["labels"] == LABELS
        assert p["foreground_pixels"] == d.foreground_pixels
        assert p["area_mm2"] == pytest.approx(d.area_mm2)
        assert p["classes"]["structure"]["pixels"] == d.foreground_pixels
    # DICOM SEG: one per source series (the CT pair shares one), each referencing its sources
    segs = {s["source_series_instance_uid"]: s for s in doc["segmentations"]}
    assert len(segs) == 3 and sorted(s["frames"] for s in segs.values()) == [1, 1, 2]
    for pred, d, path in zip(preds, direct, dicoms, strict=True):
        written = segs[pred["series_instance_uid"]]
        seg = hd.seg.segread(written["path"]) if "ct" in path.name or "mr" in path.name else None
        if seg is None:  # no frame of reference: read as ingestion does
            from medflow.components.dicom.dicom_seg_masks import load_segmentation

            seg = load_segmentation(written["path"])
        assert seg.SegmentSequence[0].SegmentLabel == "structure"
        pixels = seg.get_pixels_by_source_instance([pred["sop_instance_uid"]])[0, ..., 0]
        np.testing.assert_array_equal(pixels, d.mask)
    # overlays: RGB on the source grid, coloured where the mask is
    for pred, d in zip(preds, direct, strict=True):
        with Image.open(pred["overlay"]) as im:
            rgb = np.asarray(im)
        assert rgb.shape == (*d.mask.shape, 3)
        inside, outside = rgb[d.mask > 0], rgb[d.mask == 0]
        assert (inside[:, 0] != inside[:, 1]).mean() > 0.9  # tinted
        assert (outside[:, 0] == outside[:, 1]).all()  # grey
    # review store: mask_ref is a PNG mask on the source grid
    store = ReviewStore(url)
    try:
        rows = [store.get_prediction(p["review_id"]) for p in preds]
    finally:
        store.close()
    for row, d in zip(rows, direct, strict=True):
        with Image.open(row.mask_ref) as im:
            assert im.mode == "L"
            np.testing.assert_array_equal(np.asarray(im), d.mask)
        assert row.labels == LABELS and row.scores == pytest.approx(d.scores)
        assert row.scores[1] == pytest.approx(d.mean_probability)


def test_cli_table_and_fractional_seg(server, dicoms, tmp_path, capsys):
    code = main(
        [
            "predict",
            str(dicoms[-1]),
            "--server",
            f"127.0.0.1:{server.grpc_port}",
            "--model",
            "seg",
            "--seg-out",
            str(tmp_path / "seg"),
            "--seg-type",
            "fractional",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "file",
        "frame",
        "label",
        "pixels",
        "area_mm2",
        "mean_prob",
        "cut-off",
        "model",
    ]
    cells = lines[2].split()
    assert cells[0] == str(dicoms[-1].resolve()) and cells[2] == "foreground"
    assert cells[6] == "0.5000"  # the mask threshold this model serves
    assert float(cells[4]) == pytest.approx(int(cells[3]) * 0.5 * 0.25, abs=0.01)
    assert "wrote DICOM SEG" in out and "fractional" in out
    (path,) = (tmp_path / "seg").glob("seg-*.dcm")
    seg = pydicom.dcmread(path)
    assert seg.SegmentationType == "FRACTIONAL" and seg.NumberOfFrames == 1


def test_seg_out_with_a_classification_model_is_one_line_error(tmp_path, capsys):
    from tests.integration.test_serving_helpers import add_version

    base = tmp_path / "models"
    add_version(base, 1)
    srv = start_server(base)
    try:
        code = main(
            [
                "predict",
                get_testdata_file("CT_small.dcm"),
                "--server",
                f"127.0.0.1:{srv.grpc_port}",
                "--model",
                "demo",
                "--seg-out",
                str(tmp_path / "seg"),
            ]
        )
    finally:
        srv.stop()
    _, err = capsys.readouterr()
    assert code == 2
    assert "--seg-out: not an output of a classification model" in err
    assert "Traceback" not in err


def test_push_stores_a_seg_per_series_in_the_pacs(server, dicoms, tmp_path, monkeypatch, capsys):
    """--dicomweb --push with a segmentation model: a real Orthanc gets a SEG per series."""
    from medflow.components.dicom.dicom_seg_masks import load_segmentation
    from medflow.components.dicom.dicomweb import Credentials, DicomwebSource, Query, RetryPolicy
    from medflow.components.dicom.reader import parse
    from medflow.serving.client import PredictionClient
    from tests.integration.orthanc import orthanc_server

    ct_pair = dicoms[:2]
    study = pydicom.dcmread(ct_pair[0]).StudyInstanceUID
    with PredictionClient(f"127.0.0.1:{server.grpc_port}") as client:
        direct, _ = client.predict_dicom(ct_pair, "seg")
    for pacs in orthanc_server(tmp_path / "orthanc"):
        retry = RetryPolicy(attempts=2, backoff_s=0.05, timeout_s=10)
        source = DicomwebSource(pacs.dicomweb_url, Credentials(*pacs.auth), retry=retry)
        assert source.store([p.read_bytes() for p in ct_pair]) == 2
        monkeypatch.setenv("MEDFLOW_DICOMWEB_USERNAME", pacs.auth[0])
        monkeypatch.setenv("MEDFLOW_DICOMWEB_PASSWORD", pacs.auth[1])
        code = main(
            ["predict", "--dicomweb", pacs.dicomweb_url, "--study", study, "--push", "--json"]
            + ["--server", f"127.0.0.1:{server.grpc_port}", "--model", "seg"]
            + ["--seg-type", "binary", "--overlay-out", str(tmp_path / "overlays")]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        doc = json.loads(out)
        (pushed,) = doc["pushed"]
        assert pushed["kind"] == "SEG" and pushed["frames"] == 2
        assert len(list((tmp_path / "overlays").glob("*.png"))) == 2
        (ref,) = source.search(Query(study_uids=(study,), modality="SEG"))
        assert ref.sop_uid == pushed["sop_instance_uid"]
        seg = load_segmentation(parse(source.retrieve(ref), "seg"))
        assert seg.StudyInstanceUID == study
        for pred in direct:
            pixels = seg.get_pixels_by_source_instance([pred.sop_instance_uid])[0, ..., 0]
            np.testing.assert_array_equal(pixels, pred.mask)
