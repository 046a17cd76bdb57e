"""``medflow predict`` on real DICOM files (pydicom's CT and MR) against the embedded server."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medflow.cli import main
from medflow.components.dicom.pixels import load_model_input
from medflow.core.pixel_spec import PixelSpec
from tests.integration.test_serving_helpers import add_version, free_port, in_process, start_server

FILES = ("CT_small.dcm", "MR_small.dcm")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    add_version(base, 1)
    srv = start_server(base)
    yield srv
    srv.stop()


@pytest.fixture()
def dicoms(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    return [shutil.copy(get_testdata_file(name), folder / name) for name in FILES]


def _expected(paths) -> np.ndarray:
    """The SavedModel called in-process on the same (shared) preprocessing."""
    spec = PixelSpec(size=(28, 28), channels=1)
    batch = np.stack([load_model_input(p, spec)[0][0] for p in paths])
    return in_process(1, image=batch)["probabilities"]


def _predict(capsys, *args) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json_equals_in_process(server, dicoms, capsys):
    code, out, _ = _predict(
        capsys, *dicoms, "--server", f"127.0.0.1:{server.grpc_port}", "--model", "demo", "--json"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["rejected"] == []
    preds = doc["predictions"]
    assert [p["path"] for p in preds] == [str(p.resolve()) for p in dicoms]
    for pred, path in zip(preds, dicoms, strict=True):
        ds = pydicom.dcmread(path)
        assert pred["sop_instance_uid"] == ds.SOPInstanceUID
        assert pred["study_instance_uid"] == ds.StudyInstanceUID
        assert pred["series_instance_uid"] == ds.SeriesInstanceUID
        assert (pred["model_name"], pred["model_version"], pred["frame_index"]) == ("demo", 1, 0)
        assert pred["labels"] == ["class_0", "class_1"]  # no contract: names from the signature
    probs = np.array([p["probabilities"] for p in preds])
    np.testing.assert_allclose(probs, _expected(dicoms), atol=1e-6)
    assert [p["class_id"] for p in preds] == list(probs.argmax(axis=1))


def test_predict_table_with_contract(server, dicoms, capsys):
    contract = server.manager.resolve("demo").path / "contract.json"
    code, out, _ = _predict(
        capsys,
        dicoms[0].parent,  # a folder
        "--server",
        f"127.0.0.1:{server.grpc_port}",
        "--model",
        "demo",
        "--contract",
        contract,
        "--batch-size",
        "1",
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["file", "frame", "label", "probability", "model"]
    expected = _expected(sorted(dicoms))
    for line, probs, path in zip(lines[2:], expected, sorted(dicoms), strict=True):
        cells = line.split()
        assert cells[0] == str(path.resolve())
        assert cells[2] == ("normal", "abnormal")[int(probs.argmax())]
        assert float(cells[3]) == pytest.approx(probs.max(), abs=1e-4)
        assert cells[4] == "demo:1"


def test_predict_records_in_review_store(server, dicoms, tmp_path, capsys):
    from medflow.dashboard.store import ReviewStore

    url = f"sqlite:///{tmp_path}/review.db"
    code, out, _ = _predict(
        capsys,
        *dicoms,
        "--server",
        f"127.0.0.1:{server.grpc_port}",
        "--model",
        "demo",
        "--json",
        "--record",
        "--store-url",
        url,
    )
    assert code == 0
    preds = json.loads(out)["predictions"]
    store = ReviewStore(url)
    try:
        stored = [store.get_prediction(p["review_id"]) for p in preds]
        assert store.count() == 2
    finally:
        store.close()
    expected = _expected(dicoms)
    for row, pred, path, probs in zip(stored, preds, dicoms, expected, strict=True):
        assert row.image_ref == str(path.resolve())
        assert row.sop_instance_uid == pydicom.dcmread(path).SOPInstanceUID
        assert (row.model_name, row.model_version) == ("demo", "1")
        assert row.labels == pred["labels"]
        np.testing.assert_allclose(row.scores, probs, atol=1e-6)
        assert row.status == "pending"


def test_predict_reports_non_dicom_files(server, dicoms, capsys):
    (dicoms[0].parent / "notes.txt").write_text("not an image")
    code, out, err = _predict(
        capsys,
        dicoms[0].parent,
        "--server",
        f"127.0.0.1:{server.grpc_port}",
        "--model",
        "demo",
        "--json",
    )
    assert code == 1  # some files were skipped
    doc = json.loads(out)
    assert len(doc["predictions"]) == 2
    assert [r["path"] for r in doc["rejected"]] == [str(dicoms[0].parent / "notes.txt")]
    assert "skipped" in err and "notes.txt" in err


def test_predict_without_a_server_is_one_line_error(dicoms, capsys):
    code, out, err = _predict(
        capsys, *dicoms, "--server", f"127.0.0.1:{free_port()}", "--model", "demo", "--timeout", "2"
    )
    assert code == 3
    assert "UNAVAILABLE" in err and "is the server running" in err
    assert "Traceback" not in err
