"""``medflow run`` checks its inputs before any component starts (issue 24, item 4): one
line, exit 2, in seconds, where the pipeline used to fail a minute later in the Trainer
(``KeyError: 'label'``) or StatisticsGen (no files for an empty eval split)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medflow.cli import main


def _folder(tmp_path: Path, patients: list[str], split_column: list[str] | None = None) -> Path:
    """One MR_small copy per entry of ``patients`` (its PatientID) plus labels.csv."""
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i, patient in enumerate(patients):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.PatientID = patient
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.9.{i}"
        ds.save_as(data / f"{i:03d}.dcm")
        row = {"SOPInstanceUID": ds.SOPInstanceUID, "label": i % 2}
        if split_column:
            row["split"] = split_column[i]
        rows.append(row)
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return data


def _run(capsys, tmp_path, *args) -> tuple[int, str]:
    start = time.perf_counter()
    code = main(["run", *map(str, args), "--workdir", str(tmp_path / "work"), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert time.perf_counter() - start < 20, "the check must come before the pipeline"
    assert not (tmp_path / "work" / "logs").exists() or not any(
        (tmp_path / "work" / "logs").iterdir()
    ), "no component may have started"
    assert "\n" not in err and "Traceback" not in err
    return code, err


def test_supervised_task_without_labels(tmp_path, capsys):
    data = _folder(tmp_path, ["A", "B"])
    code, err = _run(capsys, tmp_path, data)
    assert code == 2
    assert "trains on labels: pass --labels CSV" in err and "label" in err


def test_manifest_without_the_tasks_column(tmp_path, capsys):
    data = _folder(tmp_path, ["A", "B"])
    (tmp_path / "other.csv").write_text("SOPInstanceUID,finding\n1.2,x\n")
    code, err = _run(capsys, tmp_path, data, "--labels", tmp_path / "other.csv")
    assert code == 2
    assert "other.csv: no label column" in err and "finding" in err


def test_five_files_of_one_patient_leave_eval_empty(tmp_path, capsys):
    data = _folder(tmp_path, ["P1"] * 5)
    code, err = _run(capsys, tmp_path, data, "--labels", tmp_path / "labels.csv")
    assert code == 2
    assert "the 5 labelled file(s) all fall in" in err
    assert "split 'eval' would be empty" in err or "split 'train' would be empty" in err


def test_split_column_without_eval_rows(tmp_path, capsys):
    data = _folder(tmp_path, ["A", "B", "C"], split_column=["train"] * 3)
    code, err = _run(capsys, tmp_path, data, "--labels", tmp_path / "labels.csv")
    assert code == 2
    assert "labels.csv: no row in split 'eval'" in err


def test_splits_without_eval(tmp_path, capsys):
    data = _folder(tmp_path, ["A", "B"])
    args = (data, "--labels", tmp_path / "labels.csv", "--splits", "train=80,test=20")
    code, err = _run(capsys, tmp_path, *args)
    assert code == 2
    assert "--splits train=80,test=20" in err and "'eval'" in err


def test_files_the_manifest_does_not_describe(tmp_path, capsys):
    data = _folder(tmp_path, ["A", "B"])
    (tmp_path / "foreign.csv").write_text("SOPInstanceUID,label\n9.9.9,1\n")
    code, err = _run(capsys, tmp_path, data, "--labels", tmp_path / "foreign.csv")
    assert code == 2
    assert "no DICOM file there matches a row of" in err


def test_inputs_that_split_pass_the_check(tmp_path):
    """Many patients: both splits get files, so the check lets the run go on."""
    from medflow.components.dicom.keys import ensure_key_file
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.preflight import check_inputs

    data = _folder(tmp_path, [f"P{i}" for i in range(30)])
    key = ensure_key_file(tmp_path / "deid.key")
    config = PipelineConfig(data_root=str(data), label_manifest=str(tmp_path / "labels.csv"))
    check_inputs(config, str(key))  # no error


@pytest.mark.parametrize("present", [("train",), ()])
def test_tfrecord_input_needs_train_and_eval_files(tmp_path, capsys, present):
    for split in present:
        (tmp_path / "tf" / split).mkdir(parents=True)
        (tmp_path / "tf" / split / "a.tfrecord").write_bytes(b"")
    (tmp_path / "tf").mkdir(exist_ok=True)
    code, err = _run(capsys, tmp_path, tmp_path / "tf", "--format", "tfrecord")
    assert code == 2 and "no TFRecord files" in err


def test_a_huge_component_error_is_one_short_line():
    """The Evaluator once printed 271 KB of raw tf.Example bytes (issue 24, item 1)."""
    from medflow.pipelines.local_runner import MAX_ERROR_CHARS, short_error

    text = short_error(ValueError("bad example: " + repr(b"\x00\x01" * 100_000) + "\nmore"))
    assert len(text) <= MAX_ERROR_CHARS and "\n" not in text
    assert text.startswith("ValueError: bad example:") and "see the log" in text
    assert short_error(KeyError("label")) == "KeyError: 'label'"
