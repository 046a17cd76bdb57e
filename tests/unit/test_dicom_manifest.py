"""Label manifests: clear errors naming the file and line; the optional split column."""

from __future__ import annotations

import pytest

from medflow.components.ingest.manifest import read_manifest
from medflow.core.errors import InputError


def _csv(tmp_path, text: str):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_labels_sites_and_splits(tmp_path):
    m = read_manifest(
        _csv(
            tmp_path, "SOPInstanceUID,label,site,split,_reviewer\n1.2.3,1,A,eval,bob\n1.2.4,0,,,\n"
        )
    )
    assert m.key_column == "SOPInstanceUID"
    assert m.label_columns == ["label"]  # site, split and _provenance are not labels
    assert m.rows == {"1.2.3": {"label": 1}, "1.2.4": {"label": 0}}
    assert m.sites == {"1.2.3": "A"} and m.splits == {"1.2.3": "eval"}
    m.check_splits(["train", "eval"])


def test_unknown_split_names_file_line_and_allowed(tmp_path):
    path = _csv(tmp_path, "SOPInstanceUID,label,split\n1.2.3,1,train\n1.2.4,0,valid\n")
    m = read_manifest(path)
    with pytest.raises(InputError) as err:
        m.check_splits(["train", "eval"])
    text = str(err.value)
    assert str(path) in text and "line 3" in text and "'valid'" in text and "train, eval" in text


def test_no_key_column(tmp_path):
    path = _csv(tmp_path, "uid,label\n1.2.3,1\n")
    with pytest.raises(InputError, match="exactly one key column") as err:
        read_manifest(path)
    assert str(path) in str(err.value) and "SOPInstanceUID" in str(err.value)


def test_two_key_columns(tmp_path):
    with pytest.raises(InputError, match="exactly one key column"):
        read_manifest(_csv(tmp_path, "SOPInstanceUID,path,label\n1.2.3,a.dcm,1\n"))


def test_no_label_column(tmp_path):
    with pytest.raises(InputError, match="no label column"):
        read_manifest(_csv(tmp_path, "SOPInstanceUID,split\n1.2.3,train\n"))


def test_missing_label_names_the_line(tmp_path):
    path = _csv(tmp_path, "SOPInstanceUID,label\n1.2.3,1\n1.2.4,\n")
    with pytest.raises(InputError) as err:
        read_manifest(path)
    assert "line 3: missing label label for '1.2.4'" in str(err.value)
    assert str(path) in str(err.value)


def test_duplicate_keys_name_both_lines(tmp_path):
    path = _csv(tmp_path, "SOPInstanceUID,label\n1.2.3,1\n1.2.4,0\n1.2.3,0\n")
    with pytest.raises(InputError) as err:
        read_manifest(path)
    assert "line 4: duplicate SOPInstanceUID '1.2.3' (first on line 2)" in str(err.value)


def test_empty_key_and_error_count(tmp_path):
    rows = "".join(f",{i}\n" for i in range(8))
    with pytest.raises(InputError) as err:
        read_manifest(_csv(tmp_path, "SOPInstanceUID,label\n" + rows))
    assert "line 2: empty SOPInstanceUID" in str(err.value) and "(and 3 more)" in str(err.value)


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"SOPInstanceUID,label\n\xff\xfe,1\n")
    with pytest.raises(InputError, match="UTF-8"):
        read_manifest(bad)


def test_each_label_column_has_one_type(tmp_path):
    """A feature must have one type in every example: "286" beside "292.2" is a float column,
    "1" beside "n/a" a text column."""
    m = read_manifest(
        _csv(
            tmp_path,
            "SOPInstanceUID,label,slice_mm,grade\n1.2.3,1,286,2\n1.2.4,0,292.2,n/a\n",
        )
    )
    assert m.rows == {
        "1.2.3": {"label": 1, "slice_mm": 286.0, "grade": "2"},
        "1.2.4": {"label": 0, "slice_mm": 292.2, "grade": "n/a"},
    }
    assert [type(r["slice_mm"]) for r in m.rows.values()] == [float, float]
