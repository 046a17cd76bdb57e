"""``make run`` twice: the demo writes its DICOM files once (issue 24, item 8)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from medflow.commands.demo import default_data_dir
from medflow.workflows.demo import IMPORT_MARKER, import_once

NPZ = default_data_dir() / "breastmnist.npz"


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def npz(tmp_path) -> Path:
    if not NPZ.is_file():
        pytest.fail(f"{NPZ} missing: the shared data folder is part of the test set-up")
    return Path(shutil.copy(NPZ, tmp_path / NPZ.name))


def test_unchanged_rerun_rewrites_nothing(npz, tmp_path, capsys):
    out = tmp_path / "demo"
    manifest = import_once(npz, out, limit=3)
    before = _mtimes(out / "dicom")
    assert len(before) == 6 and (out / IMPORT_MARKER).is_file()
    csv_mtime = manifest.stat().st_mtime_ns
    assert import_once(npz, out, limit=3) == manifest
    assert _mtimes(out / "dicom") == before
    assert manifest.stat().st_mtime_ns == csv_mtime
    assert "up to date" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["other_limit", "file_removed", "file_rewritten", "new_npz"])
def test_any_change_imports_again(npz, tmp_path, change):
    out = tmp_path / "demo"
    import_once(npz, out, limit=3)
    files = sorted((out / "dicom").rglob("*.dcm"))
    limit = 3
    if change == "other_limit":
        limit = 2
    elif change == "file_removed":
        files[0].unlink()
    elif change == "file_rewritten":
        os.utime(files[0], ns=(1, 1))  # what a rewrite does to the ingestion fingerprint
        files[1].write_bytes(files[1].read_bytes())
    else:
        npz.write_bytes(npz.read_bytes() + b"\0")  # different bytes (np.load ignores the tail)
    os.utime(out / IMPORT_MARKER, ns=(1, 1))
    import_once(npz, out, limit=limit)
    assert len(list((out / "dicom").rglob("*.dcm"))) == 2 * limit
    assert (out / IMPORT_MARKER).stat().st_mtime_ns > 1  # imported again, marker rewritten


def test_interrupted_import_is_redone(npz, tmp_path):
    out = tmp_path / "demo"
    import_once(npz, out, limit=2)
    (out / IMPORT_MARKER).unlink()  # as if killed between the files and the marker
    before = _mtimes(out / "dicom")
    import_once(npz, out, limit=2)
    assert _mtimes(out / "dicom") != before and (out / IMPORT_MARKER).is_file()
