"""Ingestion end to end on phantoms: accounting, patient-level splits, determinism."""

from __future__ import annotations

import copy
import csv
import gzip
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest

from medflow.components.dicom.deid import DeidKey, deidentify, remap_uid
from medflow.components.dicom.errors import REASONS
from medflow.components.ingest.engine import REPORT_NAME, IngestOptions, ingest
from medflow.components.ingest.examples import _header_features
from medflow.components.ingest.manifest import read_manifest
from medflow.core.errors import InputError
from tests import phantoms as P

KEY = DeidKey(b"0123456789abcdef-test")
HOSTILE = {
    "bad/polyglot.dcm": ("executable_preamble", lambda: P.with_preamble(_ct(90), b"MZ")),
    "bad/cut.dcm": ("truncated", lambda: P.truncated_pixels(_ct(91))),
    "bad/huge.dcm": ("too_many_pixels", lambda: P.to_bytes(P.huge_dimensions(P.phantom(seed=92)))),
    "bad/bomb.dcm": ("deflate_bomb", lambda: P.deflate_bomb(expanded_mb=40)),
    "bad/notes.txt": ("not_dicom", lambda: b"radiology notes"),
    "bad/us.dcm": ("burned_in_annotation", lambda: P.to_bytes(P.phantom("US", seed=93))),
}


def _ct(seed: int) -> bytes:
    return P.to_bytes(P.phantom("CT", seed=seed))


def read_examples(out: Path) -> dict[str, list[dict]]:
    """{split folder: [features as python values]} from the GZIP TFRecords."""
    import tensorflow as tf

    splits = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and p.name != "quarantine"):
        rows = []
        for shard in sorted(folder.glob("data_tfrecord-*.gz")):
            for raw in tf.data.TFRecordDataset(str(shard), compression_type="GZIP"):
                feats = tf.train.Example.FromString(raw.numpy()).features.feature
                rows.append({k: _value(v) for k, v in feats.items()})
        splits[folder.name] = rows
    return splits


def _value(feature):
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value)
    return values[0] if len(values) == 1 else values


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != REPORT_NAME
    }


def assert_no_partial_outputs(out: Path) -> None:
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src")
    P.study_series(root / "ct", n_patients=8, per_patient=2)
    P.write(P.phantom("MR", seed=500, patient_id="MRN-0001", study=2), root / "mr" / "a.dcm")
    P.write(P.compressed(P.phantom("CT", seed=501, patient_id="MRN-0100")), root / "rle.dcm")
    P.write(P.phantom("MR", seed=502, patient_id="MRN-0101", frames=3), root / "multi.dcm")
    (root / "zz").mkdir()
    shutil.copy(root / "ct" / "p00" / "i01.dcm", root / "zz" / "copy_of_p00.dcm")
    for rel, (_, make) in HOSTILE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(make())
    return root


@pytest.fixture(scope="module")
def serial(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    return out, ingest(source, out, KEY)


def test_every_input_is_accounted_for(source, serial):
    out, report = serial
    c = report.counts
    n_inputs = sum(1 for p in source.rglob("*") if p.is_file())
    assert c["inputs"] == n_inputs == 16 + 3 + 1 + len(HOSTILE)
    assert (c["written"], c["quarantined"], c["duplicates"]) == (19, len(HOSTILE), 1)
    by_path = {f["path"]: f for f in report.files}
    for rel, (reason, _) in HOSTILE.items():
        assert (by_path[rel]["status"], by_path[rel]["reason"]) == ("quarantined", reason)
        assert (out / by_path[rel]["copy"]).read_bytes() == (source / rel).read_bytes()
    assert by_path["zz/copy_of_p00.dcm"] == {
        "path": "zz/copy_of_p00.dcm",
        "status": "duplicate",
        "duplicate_of": "ct/p00/i01.dcm",
    }
    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved["counts"] == c and saved["quarantine_reasons"] == report.quarantine_reasons
    assert set(saved["quarantine_reasons"]) <= set(REASONS)
    assert_no_partial_outputs(out)


def test_patients_never_span_two_splits(serial):
    out, report = serial
    examples = read_examples(out)
    splits_of = defaultdict(set)
    for split, rows in examples.items():
        for row in rows:
            splits_of[row["patient_id"]].add(split)
    assert len(splits_of) == 10  # 8 CT patients (one with an MR too) + 2 more
    assert all(len(s) == 1 for s in splits_of.values())
    assert sum(len(r) for r in examples.values()) == report.counts["examples"] == 19
    assert {s: len(r) for s, r in examples.items()} == {
        s: v["examples"] for s, v in report.splits.items()
    }


def test_outputs_hold_no_identifying_values(serial):
    out, _ = serial
    blob = b"".join(gzip.decompress(b) for b in shard_bytes(out).values() if b[:2] == b"\x1f\x8b")
    assert blob
    for value in P.ALL_PHI_STRINGS + [P.ORG_ROOT]:
        assert value.encode() not in blob, value
    report = (out / REPORT_NAME).read_text()
    for value in P.ALL_PHI_STRINGS:
        assert value not in report


def test_emitted_header_features_are_those_of_the_fully_deidentified_file(source, serial):
    """Ingestion de-identifies only what it emits; the emitted values must be exactly what
    full Annex E de-identification of the source file leaves."""
    out, _ = serial
    sources = {}
    for path in source.rglob("*.dcm"):
        if "bad" not in path.parts:
            ds = pydicom.dcmread(path)
            sources[remap_uid(KEY, ds.SOPInstanceUID)] = ds
    checked = 0
    for rows in read_examples(out).values():
        for row in rows:
            full = copy.deepcopy(sources[row["sop_uid"].decode()])
            identity = deidentify(full, KEY)
            expected = _header_features(full, identity)
            assert {k: row[k].decode() for k in expected} == expected
            checked += 1
    assert checked == 19


def test_rerun_and_parallel_give_identical_outputs(source, serial, tmp_path):
    out, report = serial
    again = ingest(source, tmp_path / "again", KEY)
    parallel = ingest(source, tmp_path / "parallel", KEY, options=IngestOptions(workers=2))
    expected = {k: v for k, v in shard_bytes(out).items() if not k.startswith("quarantine")}
    for other, other_report in ((tmp_path / "again", again), (tmp_path / "parallel", parallel)):
        got = {k: v for k, v in shard_bytes(other).items() if not k.startswith("quarantine")}
        assert got == expected
        assert other_report.counts == report.counts
        assert other_report.files == report.files
        assert_no_partial_outputs(other)


def test_rerun_into_same_folder_replaces_outputs(source, tmp_path):
    out = tmp_path / "out"
    ingest(source / "ct", out, KEY)
    first = shard_bytes(out)
    ingest(source / "ct", out, KEY)
    assert shard_bytes(out) == first
    assert_no_partial_outputs(out)


def _manifest(tmp_path: Path, rows: list[tuple]) -> Path:
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([("SOPInstanceUID", "label", "split"), *rows])
    return path


def test_manifest_split_column_overrides_the_hash(tmp_path):
    src = tmp_path / "src"
    paths = P.study_series(src, n_patients=6, per_patient=2)
    sops = [pydicom.dcmread(p).SOPInstanceUID for p in paths]
    # patient 5's second file asks for another split than its first: split_conflict
    wanted = ["eval", "eval"] * 5 + ["train", "eval"]
    manifest = _manifest(
        tmp_path, [(s, i % 2, w) for i, (s, w) in enumerate(zip(sops, wanted, strict=True))]
    )
    report = ingest(src, tmp_path / "out", KEY, read_manifest(manifest))
    by_path = {f["path"]: f for f in report.files}
    rel = [p.relative_to(src).as_posix() for p in paths]
    assert [by_path[r].get("split") for r in rel[:11]] == wanted[:11]
    conflict = by_path[rel[11]]
    assert (conflict["status"], conflict["reason"]) == ("quarantined", "split_conflict")
    assert rel[10] in conflict["message"] and "'train'" in conflict["message"]
    examples = read_examples(tmp_path / "out")
    assert len(examples["eval"]) == 10 and len(examples["train"]) == 1
    splits_of = defaultdict(set)
    for split, rows in examples.items():
        for row in rows:
            splits_of[row["patient_id"]].add(split)
            assert "split" not in row and row["label"] in (0, 1)
    assert all(len(s) == 1 for s in splits_of.values())
    assert report.counts["quarantined"] == 1


def test_unknown_split_in_manifest_fails_before_writing(tmp_path):
    src = tmp_path / "src"
    (path,) = P.study_series(src, n_patients=1, per_patient=1)
    sop = pydicom.dcmread(path).SOPInstanceUID
    manifest = _manifest(tmp_path, [(sop, 1, "validation")])
    with pytest.raises(InputError) as err:
        ingest(src, tmp_path / "out", KEY, read_manifest(manifest))
    assert "line 2" in str(err.value) and "'validation'" in str(err.value)
    assert "train, eval" in str(err.value) and str(manifest) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unlabeled_instances_are_quarantined(tmp_path):
    src = tmp_path / "src"
    first, _ = P.study_series(src, n_patients=2, per_patient=1)
    manifest = _manifest(tmp_path, [(pydicom.dcmread(first).SOPInstanceUID, 1, "")])
    report = ingest(src, tmp_path / "out", KEY, read_manifest(manifest))
    assert report.quarantine_reasons == {"unlabeled": 1}
    assert report.manifest["matched"] == 1 and report.manifest["unmatched"] == 0
