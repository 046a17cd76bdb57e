"""`medflow ingest`, `medflow import-npz`, `medflow deid-key`: exit codes and one-line errors."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from medflow.cli import main
from tests import phantoms as P


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "deid.key"
    assert main(["deid-key", "--out", str(path)]) == 0
    return path


@pytest.fixture
def dicom_dir(tmp_path):
    P.study_series(tmp_path / "src", n_patients=3, per_patient=1)
    return tmp_path / "src"


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"medflow {command}: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


def test_deid_key_is_private_and_never_overwritten(key_file, capsys):
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) == 64
    capsys.readouterr()
    assert main(["deid-key", "--out", str(key_file)]) == 2
    assert "refusing to overwrite" in _one_line_error(capsys, "deid-key")


def test_ingest_with_key_file(dicom_dir, key_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDFLOW_DEID_KEY", raising=False)
    monkeypatch.delenv("MEDFLOW_DEID_KEY_FILE", raising=False)
    out = tmp_path / "out"
    args = ["ingest", str(dicom_dir), "--out", str(out), "--deid-key-file", str(key_file)]
    assert main([*args, "--splits", "train=50,eval=50", "--image-size", "16"]) == 0
    printed = capsys.readouterr().out
    assert "inputs 3 = written 3 + quarantined 0 + duplicates 0" in printed
    report = json.loads((out / "ingest_report.json").read_text())
    assert report["counts"]["written"] == 3
    assert report["options"]["pixel"]["size"] == [16, 16]
    assert report["options"]["splits"] == {"train": 0.5, "eval": 0.5}


def test_ingest_key_from_environment_matches_key_file(dicom_dir, key_file, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDFLOW_DEID_KEY_FILE", raising=False)
    monkeypatch.setenv("MEDFLOW_DEID_KEY", key_file.read_text())
    assert main(["ingest", str(dicom_dir), "--out", str(tmp_path / "env")]) == 0
    monkeypatch.delenv("MEDFLOW_DEID_KEY")
    args = ["ingest", str(dicom_dir), "--out", str(tmp_path / "file")]
    assert main([*args, "--deid-key-file", str(key_file)]) == 0
    ids = [
        [
            f["patient_id"]
            for f in json.loads((tmp_path / d / "ingest_report.json").read_text())["files"]
        ]
        for d in ("env", "file")
    ]
    assert ids[0] == ids[1]


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "no de-identification key"),
        (["--deid-key-file", "/nonexistent/key"], "does not exist"),
        (["--splits", "train=a"], "name=weight"),
        (["--workers", "0"], "--workers 0"),
        (["--labels", "/nonexistent/labels.csv"], "does not exist"),
    ],
)
def test_ingest_usage_errors(dicom_dir, key_file, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.delenv("MEDFLOW_DEID_KEY", raising=False)
    monkeypatch.delenv("MEDFLOW_DEID_KEY_FILE", raising=False)
    args = ["ingest", str(dicom_dir), "--out", str(tmp_path / "out"), *extra]
    if extra and extra[0] != "--deid-key-file":
        args += ["--deid-key-file", str(key_file)]
    assert main(args) == 2
    assert message in _one_line_error(capsys, "ingest")


def test_short_key_and_missing_source(key_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDFLOW_DEID_KEY_FILE", raising=False)
    monkeypatch.setenv("MEDFLOW_DEID_KEY", "short")
    assert main(["ingest", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "needs at least 16" in _one_line_error(capsys, "ingest")
    args = ["ingest", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    assert main([*args, "--deid-key-file", str(key_file)]) == 2
    assert "neither a file nor a folder" in _one_line_error(capsys, "ingest")


def test_bad_manifest_names_file_and_line(dicom_dir, key_file, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("SOPInstanceUID,label\n1.2.3,1\n1.2.3,0\n")
    args = ["ingest", str(dicom_dir), "--out", str(tmp_path / "o"), "--labels", str(labels)]
    assert main([*args, "--deid-key-file", str(key_file)]) == 2
    err = _one_line_error(capsys, "ingest")
    assert str(labels) in err and "line 3: duplicate" in err


def test_nothing_written_exits_1(tmp_path, key_file, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("not dicom")
    args = ["ingest", str(tmp_path / "src"), "--out", str(tmp_path / "o")]
    assert main([*args, "--deid-key-file", str(key_file)]) == 1
    assert "none of the 1 inputs was written" in capsys.readouterr().err


def test_import_npz_then_ingest(tmp_path, key_file, capsys):
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.savez(npz, train_images=images, train_labels=np.arange(5)[:, None] % 2)
    out = tmp_path / "imp"
    assert (
        main(["import-npz", str(npz), "--out", str(out), "--splits", "train", "--limit", "4"]) == 0
    )
    assert "wrote 4 DICOM files" in capsys.readouterr().out
    args = ["ingest", str(out / "dicom"), "--labels", str(out / "labels.csv")]
    assert main([*args, "--out", str(tmp_path / "o"), "--deid-key-file", str(key_file)]) == 0
    report = json.loads((tmp_path / "o" / "ingest_report.json").read_text())
    assert report["counts"]["written"] == 4 and report["manifest"]["matched"] == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--splits", "test"], "no 'test_images'"),
        (["--limit", "0"], "--limit 0"),
        (["--splits", ","], "name at least one split"),
    ],
)
def test_import_npz_errors(tmp_path, capsys, extra, message):
    npz = tmp_path / "d.npz"
    np.savez(npz, train_images=np.zeros((1, 4, 4), np.uint8), train_labels=np.zeros((1, 1), int))
    assert main(["import-npz", str(npz), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in _one_line_error(capsys, "import-npz")


def test_import_npz_missing_file(tmp_path, capsys):
    assert main(["import-npz", str(tmp_path / "x.npz"), "--out", str(tmp_path)]) == 2
    assert "no such npz file" in _one_line_error(capsys, "import-npz")


def test_ingest_max_pixels_flag_refuses_larger_images_before_decoding(
    dicom_dir, key_file, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["ingest", str(dicom_dir), "--out", str(out), "--deid-key-file", str(key_file)]
    assert main([*args, "--max-pixels", "100"]) == 1  # nothing written
    report = json.loads((out / "ingest_report.json").read_text())
    assert report["quarantine_reasons"] == {"too_many_pixels": 3}
    assert all("over the cap of 100" in f["message"] for f in report["files"])
    assert report["options"]["max_pixels"] == 100
    capsys.readouterr()
    assert main([*args, "--max-pixels", "0"]) == 2
    assert "--max-pixels 0: must be 1 or more" in _one_line_error(capsys, "ingest")
