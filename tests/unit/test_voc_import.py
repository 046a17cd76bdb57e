"""``medflow import-voc``: BCCD (Pascal VOC) → colour DICOM, a boxes manifest and a report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medflow.cli import main
from medflow.components.ingest.voc_import import (
    Box,
    clean_boxes,
    import_voc,
    parse_boxes,
)
from medflow.core.errors import InputError

CLASSES = ("RBC", "WBC", "Platelets")


def _rows(manifest: Path) -> list[dict]:
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_bccd_subset_imports_colour_dicom_boxes_and_splits(shared_data, tmp_path):
    bccd = shared_data / "bccd"
    manifest = import_voc(bccd, tmp_path, classes=CLASSES, limit=2)
    rows = _rows(manifest)
    assert list(rows[0]) == ["SOPInstanceUID", "boxes", "split", "_source"]
    assert sorted(r["split"] for r in rows) == ["eval", "eval", "train", "train"]
    val_names = set((bccd / "ImageSets/Main/val.txt").read_text().split())
    for row in rows:
        stem = Path(row["_source"]).stem
        assert (row["split"] == "eval") == (stem in val_names)
        ds = pydicom.dcmread(tmp_path / "dicom" / f"{stem}.dcm")
        assert ds.SOPInstanceUID == row["SOPInstanceUID"]
        assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
        with Image.open(bccd / "JPEGImages" / row["_source"]) as im:
            np.testing.assert_array_equal(ds.pixel_array, np.asarray(im.convert("RGB")))
        boxes = parse_boxes(row["boxes"], row["_source"], CLASSES)
        assert boxes and all(0 <= b.x0 < b.x1 <= ds.Columns for b in boxes)
    report = json.loads((tmp_path / "import_report.json").read_text())
    dropped = sum(report["boxes_dropped"].values())
    assert report["images"] == 4
    assert report["boxes_read"] == report["boxes_kept"] + dropped
    assert report["boxes_kept"] == sum(len(json.loads(r["boxes"])) for r in rows)
    # the same UIDs on a re-import
    again = import_voc(bccd, tmp_path / "again", classes=CLASSES, limit=2)
    assert [r["SOPInstanceUID"] for r in _rows(again)] == [r["SOPInstanceUID"] for r in rows]


def _voc(tmp_path: Path, objects: list[tuple[str, int, int, int, int]]) -> Path:
    src = tmp_path / "voc"
    (src / "JPEGImages").mkdir(parents=True)
    (src / "Annotations").mkdir()
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(src / "JPEGImages" / "a.jpg")
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    (src / "Annotations" / "a.xml").write_text(
        f"<annotation><size><width>60</width><height>40</height></size>{objs}</annotation>"
    )
    return src


def test_defective_boxes_are_dropped_with_reasons_and_counted(tmp_path):
    src = _voc(
        tmp_path,
        [
            ("RBC", 1, 1, 10, 10),  # kept: x0=0 .. x1=10
            ("RBC", 1, 1, 10, 10),  # duplicate
            ("WBC", 5, 5, 5, 9),  # a click: zero area
            ("WBC", 50, 30, 90, 39),  # reaches 30 px past the right edge
            ("WBC", 20, 20, 61, 41),  # 1 px over: clipped, kept
        ],
    )
    rows = _rows(import_voc(src, tmp_path / "out", classes=CLASSES))
    assert rows[0]["split"] == "train"  # no ImageSets: everything trains
    boxes = parse_boxes(rows[0]["boxes"], "a")
    assert boxes == [Box("RBC", 0, 0, 10, 10), Box("WBC", 19, 19, 60, 40)]
    report = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert report["boxes_dropped"] == {"duplicate": 1, "out_of_image": 1, "zero_area": 1}
    assert [d["reason"] for d in report["dropped_by_image"]["a.jpg"]] == [
        "duplicate",
        "zero_area",
        "out_of_image",
    ]


def test_clean_boxes_keeps_overlapping_boxes_of_other_classes():
    kept, dropped = clean_boxes([Box("RBC", 0, 0, 10, 10), Box("WBC", 0, 0, 10, 10)], 20, 20)
    assert len(kept) == 2 and not dropped


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("not json", "boxes cell is not a JSON list"),
        ('{"label": "RBC"}', "boxes cell is not a JSON list"),
        ('[{"label": "RBC", "x0": 1}]', "box 0 is"),
        ('[{"label": "RBC", "x0": "a", "y0": 0, "x1": 1, "y1": 1}]', "non-numeric corner"),
        ('[{"label": "Cat", "x0": 0, "y0": 0, "x1": 1, "y1": 1}]', "label 'Cat', not one of"),
    ],
)
def test_malformed_boxes_cell_is_a_one_line_error(cell, message):
    with pytest.raises(InputError, match=message) as info:
        parse_boxes(cell, "labels.csv line 2", CLASSES)
    assert "\n" not in str(info.value) and "labels.csv line 2" in str(info.value)


def test_cli_unknown_label_is_one_line_error_and_no_manifest(tmp_path, capsys):
    src = _voc(tmp_path, [("Cat", 1, 1, 10, 10)])
    code = main(["import-voc", str(src), "--out", str(tmp_path / "out"), "--classes", "RBC,WBC"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.count("\n") == 0 and "a.xml" in err and "'Cat'" in err
    assert not (tmp_path / "out" / "labels.csv").exists()


def test_cli_prints_counts(tmp_path, capsys):
    src = _voc(tmp_path, [("RBC", 1, 1, 10, 10), ("RBC", 3, 3, 3, 9)])
    assert main(["import-voc", str(src), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 boxes kept (dropped: 1 zero_area)" in out
