"""OCR (Tesseract, run as a program) as the way to admit an image whose header does not rule
out burned-in text (issue 23, item 1): text-free images in, images with text kept out, a
header saying YES never admitted, and a missing Tesseract reported before any file."""

from __future__ import annotations

import pytest

from medflow.components.ingest.engine import IngestOptions, ingest
from tests import phantoms as P
from tests.unit.test_ingest_hardening import KEY, _by_path


def _sc_image(text: str | None):
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(
        (np.random.default_rng(8).random((240, 320)) * 60).astype(np.uint8), mode="L"
    )
    if text:
        ImageDraw.Draw(img).text((10, 10), text, fill=255, font=ImageFont.load_default(size=28))
    ds = P.phantom("SC", seed=8, rows=240, cols=320)
    ds.PixelData = np.asarray(img).tobytes()
    ds.pop("BurnedInAnnotation", None)
    return ds


def test_ocr_admits_a_text_free_image_and_records_why(tmp_path):
    P.write(_sc_image(None), tmp_path / "src" / "image.dcm")
    report = ingest(
        tmp_path / "src", tmp_path / "out", KEY, options=IngestOptions(scan_burned_in=True)
    )
    entry = _by_path(tmp_path / "out")["image.dcm"]
    assert report.counts["written"] == 1
    assert entry["burned_in_check"] == (
        "SC image with BurnedInAnnotation=absent: admitted, OCR found no text"
    )


def test_ocr_keeps_an_image_with_burned_in_text_in_quarantine(tmp_path):
    P.write(_sc_image("DOE^JOHN 19640312"), tmp_path / "src" / "image.dcm")
    ingest(tmp_path / "src", tmp_path / "out", KEY, options=IngestOptions(scan_burned_in=True))
    entry = _by_path(tmp_path / "out")["image.dcm"]
    assert entry["reason"] == "burned_in_annotation" and "OCR found" in entry["message"]
    assert "19640312" not in entry["message"]  # the text read is never repeated


def test_ocr_never_admits_an_image_whose_header_says_yes(tmp_path):
    ds = _sc_image(None)
    ds.BurnedInAnnotation = "YES"
    P.write(ds, tmp_path / "src" / "image.dcm")
    ingest(tmp_path / "src", tmp_path / "out", KEY, options=IngestOptions(scan_burned_in=True))
    assert _by_path(tmp_path / "out")["image.dcm"]["reason"] == "burned_in_annotation"


def test_scan_without_tesseract_is_a_setup_error(tmp_path, monkeypatch):
    from medflow.core.errors import ConfigError

    P.write(_sc_image(None), tmp_path / "src" / "image.dcm")
    monkeypatch.setenv("PATH", str(tmp_path))  # no tesseract on it
    with pytest.raises(ConfigError, match="apt-get install tesseract-ocr"):
        ingest(tmp_path / "src", tmp_path / "out", KEY, options=IngestOptions(scan_burned_in=True))
