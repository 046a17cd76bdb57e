"""Hostile and unusual DICOM files end as a quarantine reason, never as a crash."""

from __future__ import annotations

import pytest
from pydicom.uid import JPEG2000Lossless

from medflow.components.dicom.deid import DeidKey
from medflow.components.dicom.errors import REASONS, DicomRejected
from medflow.components.dicom.reader import ReadLimits, parse
from medflow.components.ingest.examples import WorkerConfig, process_file
from medflow.core.pixel_spec import PixelSpec
from tests import phantoms as P

CFG = WorkerConfig(DeidKey(b"0123456789abcdef-test"), PixelSpec(), ReadLimits(), None, False)


def _outcome(tmp_path, data: bytes, name: str = "f.dcm", cfg: WorkerConfig = CFG):
    path = tmp_path / name
    path.write_bytes(data)
    return process_file(path, name, cfg)


@pytest.mark.parametrize(
    "magic", [b"MZ", b"\x7fELF", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"]
)
def test_executable_preamble_is_rejected_before_parsing(tmp_path, magic):
    data = P.with_preamble(P.to_bytes(P.phantom("CT")), magic)
    res = _outcome(tmp_path, data)
    assert (res.status, res.reason) == ("quarantined", "executable_preamble")
    assert "CVE-2019-11687" in res.message and "f.dcm" in res.message


def test_clean_preamble_of_same_file_is_accepted(tmp_path):
    assert _outcome(tmp_path, P.to_bytes(P.phantom("CT"))).status == "ok"


@pytest.mark.parametrize("mutate", [P.truncated_pixels, P.element_past_eof])
def test_declared_length_past_end_of_file_is_truncated(tmp_path, mutate):
    res = _outcome(tmp_path, mutate(P.to_bytes(P.phantom("CT"))))
    assert (res.status, res.reason) == ("quarantined", "truncated")
    assert "declares" in res.message and "f.dcm" in res.message


def test_dimension_overflow_over_pixel_cap(tmp_path):
    res = _outcome(tmp_path, P.to_bytes(P.huge_dimensions(P.phantom("CT"))))
    assert (res.status, res.reason) == ("quarantined", "too_many_pixels")
    assert "65535x65535x5000" in res.message


def test_dimensions_larger_than_pixel_data(tmp_path):
    ds = P.huge_dimensions(P.phantom("CT"), rows=64, cols=64, frames=3)
    res = _outcome(tmp_path, P.to_bytes(ds))
    assert (res.status, res.reason) == ("quarantined", "pixel_length_mismatch")
    assert "64x64x3" in res.message


def test_pixel_cap_is_configurable(tmp_path):
    small_cap = WorkerConfig(CFG.key, PixelSpec(max_pixels=100), ReadLimits(max_pixels=100), None)
    res = _outcome(tmp_path, P.to_bytes(P.phantom("CT")), cfg=small_cap)
    assert res.reason == "too_many_pixels"


def test_deflate_bomb_is_refused_without_inflating_it_all(tmp_path):
    data = P.deflate_bomb(expanded_mb=100)
    assert len(data) < 1 << 20  # ~100 KB on disk
    with pytest.raises(DicomRejected) as err:
        parse(data, "bomb.dcm")
    assert err.value.reason == "deflate_bomb"
    assert _outcome(tmp_path, data).reason == "deflate_bomb"


def test_small_deflated_file_is_read(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = P.phantom("SC")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    res = _outcome(tmp_path, P.to_bytes(ds))
    assert res.status == "ok", res.message


def test_not_dicom_and_empty_files(tmp_path):
    assert _outcome(tmp_path, b"hello, not dicom").reason == "not_dicom"
    assert _outcome(tmp_path, b"").reason == "not_dicom"


def test_missing_file_is_io_error(tmp_path):
    res = process_file(tmp_path / "gone.dcm", "gone.dcm", CFG)
    assert (res.status, res.reason) == ("quarantined", "io_error")


def test_burned_in_ultrasound_needs_explicit_permission(tmp_path):
    data = P.to_bytes(P.phantom("US"))
    assert _outcome(tmp_path, data).reason == "burned_in_annotation"
    allowed = WorkerConfig(CFG.key, CFG.pixel, CFG.limits, None, allow_burned_in=True)
    assert _outcome(tmp_path, data, cfg=allowed).status == "ok"


@pytest.mark.parametrize(
    "make",
    [
        lambda: P.phantom("CT"),
        lambda: P.phantom("MR"),
        lambda: P.phantom("DX"),
        lambda: P.phantom("US", burned_in="NO"),
        lambda: P.phantom("SC"),
        lambda: P.compressed(P.phantom("CT")),
        lambda: P.compressed(P.phantom("MR"), JPEG2000Lossless),
        lambda: P.phantom("MR", frames=4),
    ],
    ids=["CT", "MR", "DX-MONOCHROME1", "US-RGB", "SC", "CT-RLE", "MR-J2K", "MR-multiframe"],
)
def test_phantoms_of_every_kind_become_one_example(tmp_path, make):
    res = _outcome(tmp_path, P.to_bytes(make()))
    assert res.status == "ok", res.message
    (example,) = res.examples  # multi-frame: the middle frame by default
    assert example["image_shape"] == [28, 28, 1]


def test_compressed_and_uncompressed_give_the_same_pixels(tmp_path):
    plain = _outcome(tmp_path, P.to_bytes(P.phantom("CT", seed=3)), "a.dcm")
    rle = _outcome(tmp_path, P.to_bytes(P.compressed(P.phantom("CT", seed=3))), "b.dcm")
    assert plain.examples[0]["image"] == rle.examples[0]["image"]


def test_ct_values_are_hounsfield_and_monochrome1_is_inverted(tmp_path):
    import numpy as np

    cfg = WorkerConfig(CFG.key, PixelSpec(size=None), CFG.limits, None)
    ct = P.phantom("CT", seed=4)
    res = _outcome(tmp_path, P.to_bytes(ct), cfg=cfg)
    hu = np.frombuffer(res.examples[0]["image"], "<f4").reshape(32, 32)
    np.testing.assert_array_equal(hu, ct.pixel_array.astype(np.float32) - 1024)
    dx = P.phantom("DX", seed=5)
    res = _outcome(tmp_path, P.to_bytes(dx), cfg=cfg)
    out = np.frombuffer(res.examples[0]["image"], "<f4").reshape(32, 32)
    np.testing.assert_array_equal(out, 4095 - dx.pixel_array.astype(np.float32))


def test_every_reason_code_has_a_description():
    assert "split_conflict" in REASONS
    with pytest.raises(ValueError):
        DicomRejected("no_such_reason", "x")
