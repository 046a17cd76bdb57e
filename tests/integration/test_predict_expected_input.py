"""The contract says what the model was trained on; ``medflow predict`` warns per file about
an input outside it and ``--strict`` refuses it (issue 24, item 9: the chest X-ray model
called a cardiac MR "normal 0.9997")."""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medflow.cli import main
from medflow.core.contract import ModelContract
from medflow.core.expected_input import input_mismatches
from tests.integration.test_class_names_in_model import export_named_model
from tests.integration.test_serving_helpers import start_server

EXPECTED = {
    "modality": ["DX"],
    "photometric": ["MONOCHROME2"],
    "body_part": ["CHEST"],
    "pixel_spacing_mm": None,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    version = export_named_model(base)
    ModelContract(
        task="classification", labels=("normal", "pneumonia"), expected_input=EXPECTED
    ).write(version)
    return base


@pytest.fixture(scope="module")
def server(base):
    srv = start_server(base)
    yield srv
    srv.stop()


@pytest.fixture()
def files(tmp_path):
    """A cardiac MR (pydicom's MR_small) and the same pixels as a chest DX."""
    mr = shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr.dcm")
    ds = pydicom.dcmread(mr)
    ds.Modality, ds.BodyPartExamined = "DX", "CHEST"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.9.77"
    ds.save_as(tmp_path / "dx.dcm")
    return tmp_path / "mr.dcm", tmp_path / "dx.dcm"


def _predict(capsys, server, *args) -> tuple[int, dict, str]:
    code = main(
        ["predict", *map(str, args), "--server", f"127.0.0.1:{server.grpc_port}", "--json"]
        + ["--model", "chest"]
    )
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else {}, err


def test_warns_once_per_file_outside_the_training_data(server, base, files, capsys):
    mr, dx = files
    code, doc, err = _predict(capsys, server, mr, dx, "--model-base", base)
    assert code == 0  # a warning, not a failure
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert str(mr) in warnings[0] and "modality MR (trained on DX)" in warnings[0]
    assert "--strict" in warnings[0]
    assert len(doc["predictions"]) == 2 and doc["warnings"] == [
        w.split("warning: ", 1)[1] for w in warnings
    ]


def test_strict_refuses_what_the_model_was_not_trained_on(server, base, files, capsys):
    mr, dx = files
    code, doc, err = _predict(capsys, server, mr, dx, "--model-base", base, "--strict")
    assert code == 1  # a file was refused
    assert [p["path"] for p in doc["predictions"]] == [str(dx.resolve())]
    assert [(r["path"], r["reason"]) for r in doc["rejected"]] == [
        (str(mr.resolve()), "outside_training_data")
    ]
    assert f"skipped {mr.resolve()}" in err


def test_explicit_contract_and_no_contract(server, base, files, tmp_path, capsys):
    mr, _ = files
    version = base / "chest" / "1"
    code, _, err = _predict(capsys, server, mr, "--contract", version, "--model-base", tmp_path)
    assert code == 0 and "modality MR (trained on DX)" in err
    code, _, err = _predict(capsys, server, mr, "--model-base", tmp_path)  # no contract found
    assert code == 0 and "warning" not in err


def test_mismatch_phrases():
    assert input_mismatches(EXPECTED, {"modality": "dx", "photometric": "MONOCHROME2",
                                       "body_part": "CHEST"}) == []  # fmt: skip
    assert input_mismatches(EXPECTED, {"modality": "", "photometric": "RGB"}) == [
        "modality none (trained on DX)",
        "photometric RGB (trained on MONOCHROME2)",
        "body part none (trained on CHEST)",
    ]
    spacing = {"pixel_spacing_mm": [0.5, 0.8]}
    assert input_mismatches(spacing, {"pixel_spacing_mm": (0.82, 0.82)}) == []  # within 5 %
    assert input_mismatches(spacing, {"pixel_spacing_mm": (2.0, 2.0)}) == [
        "pixel spacing 2x2 mm (trained on 0.5-0.8 mm)"
    ]
    assert input_mismatches({}, {"modality": "MR"}) == []  # an old contract: no check
