"""The cheaper paths of ingestion give exactly what the general ones give: hand-encoded
tf.Examples (protobuf bytes), the native pixel decoder (pydicom), de-identifying only the
emitted attributes (full Annex E de-identification), nested length checks (truncation),
image statistics (numpy's mean/std/min/max)."""

from __future__ import annotations

import copy
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import pixel_array

from medflow.components.dicom import deid
from medflow.components.dicom.decode import _native_frame
from medflow.components.dicom.deid import DeidKey
from medflow.components.dicom.errors import DicomRejected
from medflow.components.dicom.pixels import image_stats
from medflow.components.dicom.reader import HeaderView, ReadLimits, parse
from medflow.components.ingest.examples import (
    HEADER_KEYWORDS,
    WorkerConfig,
    process_file,
    serialize_example,
    to_tf_example,
)
from medflow.core.pixel_spec import PixelSpec
from tests import phantoms as P

KEY = DeidKey(b"0123456789abcdef-test")
MODALITIES = ("CT", "MR", "DX", "SC", "US")


@pytest.mark.parametrize(
    "feats",
    [
        {"image": np.arange(12, dtype="<f4").tobytes(), "shape": [2, 2, 3], "label": 1},
        {"neg": [-1, 0, 2**40, -(2**63)], "one": 127, "two": 128, "big": 2**62},
        {"f": 1.5, "fl": [0.1, -2.5e-8, 1e30], "inf": [1e300], "mixed": [1.0, 2]},
        {"empty": [], "s": "CHEST", "ss": ["a", "b"], "uni": "Müller", "é": "x"},
        {"bl": [b"x", b""], "b": b"", "long": b"\x00" * 300, "z": 0, "a": "", "m": "M"},
    ],
    ids=["image", "ints", "floats", "strings", "bytes"],
)
def test_serialized_examples_are_protobufs_bytes(feats):
    _assert_same_example_bytes(serialize_example(feats), to_tf_example(feats))


def _map_entries(record: bytes) -> list[bytes]:
    """The encoded ``feature`` map entries of a serialized tf.Example, in their order."""
    (features,) = _delimited(record)
    return _delimited(features)


def _delimited(buf: bytes) -> list[bytes]:
    """The payloads of a run of length-delimited field-1 protobuf fields (keys 0x0a)."""
    out, i = [], 0
    while i < len(buf):
        assert buf[i] == 0x0A, f"unexpected key {buf[i]:#x} at {i}"
        n, shift, i = 0, 0, i + 1
        while True:
            n |= (buf[i] & 0x7F) << shift
            shift, i = shift + 7, i + 1
            if not buf[i - 1] & 0x80:
                break
        out.append(buf[i : i + n])
        i += n
    return out


def _assert_same_example_bytes(ours: bytes, example) -> None:
    """Our bytes are protobuf's, entry for entry. The order of map entries is the one thing
    allowed to differ: protobuf 3.20 (default stack) sorts keys bytewise in deterministic
    serialisation, protobuf 6's upb (next stack) puts a longer key before its prefix ("fl"
    before "f"); map order is unspecified by protobuf, so ours stays bytewise-sorted."""
    expected = example.SerializeToString(deterministic=True)
    assert type(example).FromString(ours) == example
    assert len(ours) == len(expected)
    entries = _map_entries(ours)
    assert sorted(entries) == sorted(_map_entries(expected))
    keys = [e[2 : 2 + e[1]] for e in entries]  # each entry starts 0x0a, key length (< 128)
    assert keys == sorted(keys)


def test_real_examples_serialize_like_protobuf(tmp_path):
    cfg = WorkerConfig(KEY, PixelSpec(size=(16, 16)), ReadLimits(), None, True)
    for i, modality in enumerate(MODALITIES):
        path = P.write(P.phantom(modality, seed=i, frames=1 + i % 2), tmp_path / f"{i}.dcm")
        res = process_file(path, path.name, cfg)
        assert res.status == "ok", res.message
        for feats in res.examples:
            _assert_same_example_bytes(serialize_example(feats), to_tf_example(feats))


def _native_cases():
    for modality in ("CT", "MR", "DX", "SC"):  # signed 16 (12 stored), unsigned 16, 12-bit, 8
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(P.to_bytes(P.phantom(modality))))
        yield f"phantom-{modality}", ds, None
    multi = P.phantom("MR", frames=3)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(P.to_bytes(multi)))
    for index in range(3):
        yield f"phantom-MR-frame{index}", ds, index
    for path in pydicom.data.get_testdata_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
                frames = int(ds.get("NumberOfFrames", 1) or 1)
            except Exception:  # noqa: BLE001 - files pydicom cannot read are not cases
                continue
        for index in [None] if frames == 1 else [0, frames // 2, frames - 1]:
            yield path, ds, index


def test_native_decoder_gives_pydicoms_arrays():
    checked = 0
    for name, ds, index in _native_cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = _native_frame(ds, index)
            if fast is None:
                continue
            expected = pixel_array(ds, index=index)
        assert fast.dtype == expected.dtype and fast.shape == expected.shape, name
        np.testing.assert_array_equal(fast, expected, err_msg=str(name))
        checked += 1
    assert checked >= 40  # phantoms and most uncompressed mono files of pydicom(-data)


def test_native_decoder_declines_what_it_does_not_handle():
    rgb = pydicom.dcmread(pydicom.filebase.DicomBytesIO(P.to_bytes(P.phantom("US"))))
    rle = pydicom.dcmread(pydicom.filebase.DicomBytesIO(P.to_bytes(P.compressed(P.phantom("CT")))))
    short = pydicom.dcmread(pydicom.filebase.DicomBytesIO(P.to_bytes(P.phantom("MR"))))
    short.PixelData = short.PixelData[:-2]
    assert _native_frame(rgb, None) is None
    assert _native_frame(rle, None) is None
    assert _native_frame(short, None) is None


@pytest.mark.parametrize("modality", MODALITIES)
def test_deidentified_values_equal_those_of_full_deidentification(modality):
    original = P.phantom(modality, seed=3)
    original.PatientAge = "101Y"  # capped to 090Y
    full = copy.deepcopy(original)
    identity = deid.deidentify(full, KEY)
    untouched = copy.deepcopy(original)
    keywords = tuple(e.keyword for e in original if e.keyword and e.VR != "SQ")
    assert set(HEADER_KEYWORDS) - {"ViewPosition"} <= set(keywords)
    values = deid.deidentified_values(original, keywords, KEY, identity)
    for keyword in keywords:
        if keyword in full:
            assert values[keyword] == full[keyword].value, keyword
        else:
            assert keyword not in values, keyword
    assert values["PatientAge"] == "090Y" and values["PatientID"] == identity.patient_key
    assert original == untouched  # the source data set is not modified
    for value in P.ALL_PHI_STRINGS + [P.ORG_ROOT]:
        assert all(value not in str(v) for v in values.values()), value
    with pytest.raises(ValueError, match="sequence"):
        deid.deidentified_values(original, ("SourceImageSequence",), KEY, identity)


def test_truncated_element_inside_a_sequence_is_rejected():
    data = P.to_bytes(P.phantom("CT"))
    inner = struct.pack("<HH", 0x0008, 0x0080) + b"LO" + struct.pack("<H", 200) + b"Hospital"
    item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
    seq = struct.pack("<HH", 0xFFFA, 0xFFFA) + b"SQ\x00\x00" + struct.pack("<I", len(item)) + item
    with pytest.raises(DicomRejected) as err:
        parse(data + seq, "nested.dcm")
    assert err.value.reason == "truncated"
    assert "(0008,0080) declares 200 bytes" in err.value.message


def _header_cases() -> list[str]:
    files = [p for p in pydicom.data.get_testdata_files() if Path(p).is_file()]
    return [f"phantom-{m}" for m in MODALITIES] + [
        p for p in files if Path(p).read_bytes()[128:132] == b"DICM"
    ]


@pytest.mark.parametrize("case", _header_cases(), ids=lambda v: Path(v).name)
def test_header_view_values_equal_pydicom(case):
    """Every top-level non-sequence element reads the same through HeaderView (raw bytes
    decoded where plain) as through pydicom's conversion, VR included."""
    if case.startswith("phantom-"):
        data = P.to_bytes(P.phantom(case.removeprefix("phantom-"), frames=2))
    else:
        data = Path(case).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
            keywords = [e.keyword for e in pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))]
        except Exception:  # noqa: BLE001 - files pydicom cannot read are not cases
            pytest.skip("pydicom cannot read it")
        view = HeaderView(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)))
        for keyword in filter(None, keywords):
            if ds[keyword].VR == "SQ":
                continue
            vr, value = view.element(keyword)
            assert vr == ds[keyword].VR, keyword
            assert value == ds[keyword].value, keyword
            assert type(value) in (type(ds[keyword].value), str, int, float, bytes), keyword
    assert view.get("NoSuchKeyword", "absent") == "absent"
    assert "NoSuchKeyword" not in view


def test_header_view_falls_back_where_values_are_not_plain():
    """Non-ASCII text, several values, empty values and big-endian numbers: the same as
    pydicom (text in another character set is decoded by pydicom, not here)."""
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Manufacturer = "Müller"
    ds.InstitutionName = "Zürich"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelSpacing = [0.5, "0.25"]
    ds.BodyPartExamined = ""
    ds.Rows = 300
    ds.RescaleSlope = "1e-2"
    ds.NumberOfFrames = "+7"
    ds.StudyDate = "20200101"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientID = "  ID 7  "
    for little_endian, implicit in ((True, False), (True, True), (False, False)):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = {
            (True, False): pydicom.uid.ExplicitVRLittleEndian,
            (True, True): pydicom.uid.ImplicitVRLittleEndian,
            (False, False): pydicom.uid.ExplicitVRBigEndian,
        }[(little_endian, implicit)]
        buf = pydicom.filebase.DicomBytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
            data = buf.getvalue()
            expected = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
            view = HeaderView(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)))
            for elem in expected:
                assert view.get(elem.keyword) == elem.value, (elem.keyword, little_endian)
                assert view.element(elem.keyword)[0] == elem.VR
    assert view.get("Manufacturer") == "Müller"
    assert view.get("PatientID") == "  ID 7"


def test_dates_parse_like_strptime():
    """Eight-digit dates are read without strptime: same date, or ValueError, as strptime."""
    import datetime as dt
    import random

    def outcome(fn, value):
        try:
            return fn(value)
        except ValueError:
            return "invalid"

    rng = random.Random(0)
    cases = ["00000101", "20200230", "20240229", "20230229", "20201301", "20200100"]
    cases += ["20201231235959.5", "99991231", "2020010", "2020-01-01", "20200101 ", ""]
    cases += [f"{rng.randrange(10**8):08d}" for _ in range(5000)]
    cases += [
        f"{rng.randrange(1, 3000):04d}{rng.randrange(14):02d}{rng.randrange(33):02d}"
        for _ in range(5000)
    ]
    for value in cases:
        expected = outcome(lambda v: dt.datetime.strptime(v[:8], "%Y%m%d").date(), value)
        assert outcome(deid._parse_date, value) == expected, value


def test_repeated_features_serialize_like_protobuf():
    """Map entries reused from earlier examples (str/int values) still give protobuf's bytes,
    and values that compare equal but encode differently are never confused."""
    series = [
        {"a": 1, "b": "DX", "c": [28, 28, 1], "d": 0.0, "e": []},
        {"a": True, "b": "DX", "c": [28, 28, 1], "d": -0.0, "e": [1.0, 2]},
        {"a": 1.0, "b": "DX", "c": [28.0, 28, 1], "d": 0, "e": []},
        {"a": 1, "b": "dx", "c": (28, 28, 1), "d": 0.0, "e": [b"x"]},
    ]
    for feats in series + series:
        expected = to_tf_example(feats).SerializeToString(deterministic=True)
        assert serialize_example(feats) == expected, feats


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).uniform(0, 255, (28, 28, 1)),
        np.random.default_rng(1).normal(-300, 900, (224, 224, 1)),  # HU-like, negative mean
        np.full((5, 7, 3), 1234.5),
        np.arange(4, dtype=np.float64).reshape(2, 2, 1) + 1e6,  # large offset, small spread
    ],
)
def test_image_stats_match_numpy(image):
    image = image.astype(np.float32)
    stats = image_stats(image)
    ref = image.astype(np.float64)
    assert stats["img_mean"] == pytest.approx(ref.mean(), rel=1e-9, abs=1e-9)
    assert stats["img_std"] == pytest.approx(ref.std(), rel=1e-5, abs=1e-4)
    assert (stats["img_min"], stats["img_max"]) == (float(image.min()), float(image.max()))


def test_image_stats_propagate_nan():
    image = np.ones((4, 4, 1), np.float32)
    image[1, 2, 0] = np.nan
    assert all(np.isnan(v) for v in image_stats(image).values())
