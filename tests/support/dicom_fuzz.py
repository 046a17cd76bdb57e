"""Structure-aware DICOM mutation for the fuzz suite (issue 23): seed files, a raw element
walker, and Hypothesis strategies that describe each mutated file as a readable recipe.

A fuzzed file is built in two steps, each one recorded in :class:`Recipe` so a failing
example printed by Hypothesis can be rebuilt by hand (:func:`build`):

1. data-set mutations through pydicom (:class:`Edit`): nesting PHI in deep sequences, other
   character sets and non-ASCII names, PHI under UN/private tags, an icon image in a
   sequence, re-encoding to another transfer syntax;
2. byte mutations on the written file, located by :func:`walk` (:class:`Mutation`): drop,
   duplicate or replace the value of an element (Rows, Columns, BitsAllocated,
   NumberOfFrames, TransferSyntaxUID, SpecificCharacterSet, PHI text...), change its VR or
   length field, random bytes in PixelData, truncation at an offset.

Seeds: a fixed subset of pydicom's test files (varied transfer syntaxes, each given the
phantoms' PHI so leaks are visible) and phantoms from :mod:`tests.phantoms`.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pydicom.data
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from tests import phantoms as P

# ---- seeds ---------------------------------------------------------------------------

# A fixed subset of pydicom's (and pydicom-data's) small image files: every transfer
# syntax family, odd sizes, multi-frame, 1/8/16/32-bit, RGB/YBR, SEG, RT dose.
PYDICOM_FILES = (
    "CT_small.dcm",  # explicit VR LE, signed 16-bit
    "MR_small.dcm",
    "MR_small_implicit.dcm",  # implicit VR LE
    "MR_small_bigendian.dcm",  # explicit VR BE
    "MR_small_RLE.dcm",  # RLE lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
    "SC_rgb_small_odd.dcm",  # odd rows/columns, RGB
    "SC_rgb_small_odd_jpeg.dcm",  # JPEG baseline, odd size
    "SC_rgb_rle_2frame.dcm",  # RLE, 2 frames
    "SC_rgb_rle_16bit.dcm",
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless process 14
    "SC_ybr_full_422_uncompressed.dcm",  # YBR_FULL_422 native
    "JPEG2000.dcm",  # JPEG 2000 lossy, NM
    "693_J2KI.dcm",  # JPEG 2000 CT
    "JPGExtended.dcm",  # JPEG extended 12-bit
    "image_dfl.dcm",  # deflated explicit VR LE
    "rtdose_1frame.dcm",  # implicit VR, 32-bit dose grid
    "rtdose_expb_1frame.dcm",  # big endian, 32-bit
    "liver_1frame.dcm",  # SEG, 1-bit
    "nested_priv_SQ.dcm",  # nested private sequences, no pixels
)


def _pydicom_path(name: str) -> str:
    return pydicom.data.get_testdata_file(name)


def _with_phi(ds: Dataset) -> Dataset:
    """Give a foreign file the phantoms' PHI (top level, nested and private)."""
    for keyword, value in P.PHI.items():
        setattr(ds, keyword, value)
    source = Dataset()
    source.ReferencedSOPClassUID = P.SOP_CLASS["CT"]
    source.ReferencedSOPInstanceUID = P.uid(5, 5, 5)
    source.InstitutionName = P.NESTED_PHI["nested_institution"]
    source.PersonName = P.NESTED_PHI["nested_person"]
    ds.SourceImageSequence = Sequence([source])
    request = Dataset()
    request.RequestedProcedureID = P.NESTED_PHI["request_id"]
    ds.RequestAttributesSequence = Sequence([request])
    block = ds.private_block(0x0009, "FUZZ 1.0", create=True)
    block.add_new(0x01, "LO", P.NESTED_PHI["private_name"])
    return ds


def _serialize(ds: Dataset) -> bytes:
    fp = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom.dcmwrite(fp, ds, enforce_file_format=False)
    return fp.getvalue()


@functools.lru_cache(maxsize=1)
def seeds() -> dict[str, bytes]:
    """name -> bytes of every seed file (built once; deterministic)."""
    out: dict[str, bytes] = {}
    for name in PYDICOM_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(_pydicom_path(name))
        out[f"pydicom/{name}"] = _serialize(_with_phi(ds))
    phantoms = {
        "CT": P.phantom("CT", seed=11),
        "MR3": P.phantom("MR", seed=12, frames=3),
        "DX": P.phantom("DX", seed=13),
        "US": P.phantom("US", seed=14, burned_in="NO"),
        "SC": P.phantom("SC", seed=15),
        "CT_rle": P.compressed(P.phantom("CT", seed=16)),
        "MR_j2k": P.compressed(P.phantom("MR", seed=17), JPEG2000Lossless),
        "US_rle_2frame": P.compressed(P.phantom("US", seed=18, frames=2, burned_in="NO")),
    }
    for name, ds in phantoms.items():
        out[f"phantom/{name}"] = P.to_bytes(ds)
    return out


# ---- raw element walker ----------------------------------------------------------------

ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR"}
_LONG_VRS |= {b"UT", b"UV"}


@dataclass(frozen=True)
class RawElement:
    """One element header as it lies in the file (items and delimiters included)."""

    start: int  # offset of the tag
    tag: int
    vr: bytes | None  # the explicit VR bytes (None: implicit VR, item or delimiter)
    len_at: int  # offset of the length field
    len_size: int  # 2 or 4
    length: int
    value_at: int
    depth: int  # 0: top level (or file meta)
    little: bool

    @property
    def defined(self) -> bool:
        return self.length != UNDEFINED

    @property
    def end(self) -> int:
        """End of the value (of the header only, for undefined lengths)."""
        return self.value_at + (self.length if self.defined else 0)


class _Walker:
    def __init__(self, data: bytes):
        self.data = data
        self.out: list[RawElement] = []

    def header(self, pos: int, little: bool, explicit: bool, depth: int) -> RawElement | None:
        d = self.data
        if pos + 8 > len(d):
            return None
        e = "<" if little else ">"
        group, elem = struct.unpack_from(e + "HH", d, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:
            (length,) = struct.unpack_from(e + "I", d, pos + 4)
            return RawElement(pos, tag, None, pos + 4, 4, length, pos + 8, depth, little)
        if not explicit:
            (length,) = struct.unpack_from(e + "I", d, pos + 4)
            return RawElement(pos, tag, None, pos + 4, 4, length, pos + 8, depth, little)
        vr = d[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(d):
                return None
            (length,) = struct.unpack_from(e + "I", d, pos + 8)
            return RawElement(pos, tag, vr, pos + 8, 4, length, pos + 12, depth, little)
        (length,) = struct.unpack_from(e + "H", d, pos + 6)
        return RawElement(pos, tag, vr, pos + 6, 2, length, pos + 8, depth, little)

    def dataset(self, pos, end, little, explicit, depth, meta=False) -> int:
        """Elements from ``pos`` to ``end`` (or an item delimiter); returns where it stopped."""
        while pos < end and len(self.out) < 20000 and depth < 200:
            el = self.header(pos, little, explicit, depth)
            if el is None or (meta and el.tag >> 16 != 2):
                return pos
            self.out.append(el)
            if el.tag == ITEM_END:
                return el.value_at
            if el.tag >> 16 == 0xFFFE:  # a stray item or delimiter: step over its header
                pos = el.value_at
                continue
            if self._is_sequence(el):
                stop = el.end if el.defined else len(self.data)
                pos = self.sequence(el.value_at, stop, little, explicit, depth + 1)
            elif not el.defined:  # encapsulated pixel data: fragments up to the delimiter
                pos = self.fragments(el.value_at, little, depth + 1)
            else:
                pos = el.end
        return pos

    def _is_sequence(self, el: RawElement) -> bool:
        if el.vr is not None:
            return el.vr == b"SQ" or (el.vr == b"UN" and not el.defined)
        if el.tag == PIXEL_DATA:
            return False
        try:
            return dictionary_VR(el.tag) == "SQ"
        except KeyError:
            return not el.defined

    def sequence(self, pos, end, little, explicit, depth) -> int:
        while pos < end and len(self.out) < 20000:
            el = self.header(pos, little, False, depth)
            if el is None:
                return len(self.data)
            self.out.append(el)
            if el.tag == SEQ_END:
                return el.value_at
            if el.tag != ITEM:
                return el.value_at  # broken: let the caller go on after it
            stop = el.end if el.defined else len(self.data)
            after = self.dataset(el.value_at, stop, little, explicit, depth + 1)
            pos = max(after, el.end if el.defined else after, el.value_at)
        return pos

    def fragments(self, pos, little, depth) -> int:
        while len(self.out) < 20000:
            el = self.header(pos, little, False, depth)
            if el is None:
                return len(self.data)
            self.out.append(el)
            if el.tag != ITEM or not el.defined:
                return el.value_at
            pos = el.end
        return pos


def transfer_syntax(data: bytes) -> str:
    for el in walk_meta(data):
        if el.tag == 0x00020010:
            return data[el.value_at : el.end].rstrip(b"\0 ").decode("ascii", "replace")
    return ""


def walk_meta(data: bytes) -> list[RawElement]:
    if len(data) < 132 or data[128:132] != b"DICM":
        return []
    w = _Walker(data)
    w.dataset(132, len(data), True, True, 0, meta=True)
    return w.out


def walk(data: bytes) -> list[RawElement]:
    """Every element header of a Part 10 file in file order: file meta, then the data set
    (not for a deflated one), stepping into sequences, items and pixel fragments."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return []
    w = _Walker(data)
    pos = w.dataset(132, len(data), True, True, 0, meta=True)
    ts = ""
    for el in w.out:
        if el.tag == 0x00020010:
            ts = data[el.value_at : el.end].rstrip(b"\0 ").decode("ascii", "replace")
    if ts == DeflatedExplicitVRLittleEndian:
        return w.out
    w.dataset(pos, len(data), ts != ExplicitVRBigEndian, ts != ImplicitVRLittleEndian, 0)
    return w.out


# ---- mutations ---------------------------------------------------------------------------

TRANSFER_SYNTAXES = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",  # JPEG-LS
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K
    "1.2.840.10008.1.2.4.100",  # MPEG2
    "1.2.840.10008.1.2.1.98",  # encapsulated uncompressed
    "1.2.840.10008.1.2.1.99",
    "1.2.3.4",
    "",
    "not a uid",
)
CHARSETS = (
    "ISO_IR 192",
    "ISO_IR 100",
    "ISO 2022 IR 87",
    "\\ISO 2022 IR 87",
    "ISO 2022 IR 6\\ISO 2022 IR 100",
    "ISO 2022 IR 149",
    "GB18030",
    "GBK",
    "ISO_IR 13",
    "ISO_IR 166",
    "ISO_IR 144",
    "bogus",
    "",
)
US_VALUES = (0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 24, 32, 33, 64, 255, 256, 4097, 32768, 65535)
# Keywords whose value a mutation replaces, and the values it may give them.
VALUES: dict[str, tuple] = {
    "Rows": US_VALUES,
    "Columns": US_VALUES,
    "BitsAllocated": US_VALUES,
    "BitsStored": US_VALUES,
    "HighBit": US_VALUES,
    "SamplesPerPixel": (0, 1, 2, 3, 4, 255, 65535),
    "PixelRepresentation": (0, 1, 2, 65535),
    "PlanarConfiguration": (0, 1, 2),
    "NumberOfFrames": ("0", "1", "2", "3", "-1", "1000000", "2147483648", "abc", "1.5", "", "1\\2"),
    "PhotometricInterpretation": (
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "PALETTE COLOR",
        "YBR_ICT",
        "YBR_RCT",
        "HSV",
        "",
        "garbage",
    ),
    "TransferSyntaxUID": TRANSFER_SYNTAXES,
    "SpecificCharacterSet": CHARSETS,
    "Modality": ("CT", "MR", "US", "OT", "SC", "SEG", "RTDOSE", "", "??"),
    "BurnedInAnnotation": ("YES", "NO", "", "yes", "MAYBE"),
    "SOPInstanceUID": ("1.2.3", "", "x" * 64),
    "RescaleSlope": ("0", "-1", "1e308", "nan", "inf", "abc"),
    "WindowWidth": ("0", "-1", "1e-320", "nan", "abc"),
    "PixelSpacing": ("0\\0", "-1\\1", "nan\\inf", "1e308\\1e308", "1", "abc"),
    "PatientBirthDate": ("", "99999999", "19610412x", "1961"),
    "PatientAge": ("", "999Y", "-01Y", "abc"),
}
# PHI text values whose bytes a mutation wraps in odd encodings (the PHI stays inside).
PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyDescription",
    "OtherPatientIDs",
    "PatientComments",
)
TEXT_WRAPS = (
    (b"\xff\xfe", b""),
    (b"", b"\xc3\x28"),  # invalid UTF-8
    (b"\x1b$B", b"\x1b(B"),  # ISO 2022 escapes
    (b"\x1b%G", b""),
    (b"", b"\x00\x00"),
    (b"\\", b"\\"),  # extra empty values
    (b"=", b"=\x1b$)C"),
    (b"\x8e\xa1", b"\x81\x30\x81\x30"),
)
TARGETS = (*VALUES, *PHI_KEYWORDS, "PixelData", "SourceImageSequence")
VRS = (b"SQ", b"UN", b"OB", b"OW", b"US", b"UL", b"SS", b"FD", b"PN", b"LO", b"UT", b"AT", b"\0\0")
LENGTHS = ("zero", "one", "minus1", "plus1", "double", "undefined", "max", "huge")


@dataclass(frozen=True)
class Mutation:
    """One byte-level change; ``target`` is a keyword (its first element in file order) or
    an index into :func:`walk`'s list (modulo its size)."""

    op: str  # drop|duplicate|value|wrap|vr|length|noise|truncate|insert
    target: str | int = 0
    arg: object = None

    def __repr__(self) -> str:  # compact in Hypothesis' falsifying examples
        return f"Mutation({self.op!r}, {self.target!r}, {self.arg!r})"


@dataclass(frozen=True)
class Edit:
    """One data-set change made through pydicom before the bytes are written."""

    op: str  # nest|charset|un_phi|icon|reencode|empty_sequences
    arg: object = None

    def __repr__(self) -> str:
        return f"Edit({self.op!r}, {self.arg!r})"


@dataclass(frozen=True)
class Recipe:
    seed: str
    edits: tuple[Edit, ...] = ()
    mutations: tuple[Mutation, ...] = ()


@dataclass
class Built:
    data: bytes
    log: list[str] = field(default_factory=list)


def _find(elements: list[RawElement], target: str | int) -> RawElement | None:
    if not elements:
        return None
    if isinstance(target, int):
        return elements[target % len(elements)]
    tag = tag_for_keyword(target)
    return next((el for el in elements if el.tag == tag), None)


def _vr_of(el: RawElement) -> str:
    if el.vr is not None:
        return el.vr.decode("latin-1")
    try:
        return dictionary_VR(el.tag)
    except KeyError:
        return "UN"


def _encode(el: RawElement, value: object) -> bytes:
    vr = _vr_of(el)
    e = "<" if el.little else ">"
    if isinstance(value, int):
        fmt = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}.get(vr, "H")
        return struct.pack(e + fmt.upper(), value % (1 << (8 * struct.calcsize(fmt))))
    raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return raw


def _pack_length(el: RawElement, length: int) -> bytes:
    e = "<" if el.little else ">"
    if el.len_size == 2:
        return struct.pack(e + "H", length & 0xFFFF)
    return struct.pack(e + "I", length & 0xFFFFFFFF)


def _replace_value(data: bytes, el: RawElement, value: bytes) -> bytes:
    if not el.defined:
        return data
    if el.len_size == 2 and len(value) > 0xFFFF:
        value = value[:0xFFFE]
    head = (
        data[: el.len_at]
        + _pack_length(el, len(value))
        + data[el.len_at + el.len_size : el.value_at]
    )
    return head + value + data[el.end :]


def _insert_new(data: bytes, elements: list[RawElement], keyword: str, value, log) -> bytes:
    """Add the absent element ``keyword`` at its place in the top-level data set."""
    tag = tag_for_keyword(keyword)
    top = [el for el in elements if el.depth == 0 and el.tag >> 16 != 2]
    if tag is None or not top or tag >> 16 == 2:
        log.append(f"value {keyword}: absent, not added")
        return data
    after = next((el for el in top if el.tag > tag), None)
    at = after.start if after is not None else len(data)
    first, vr = top[0], dictionary_VR(tag)
    e = "<" if first.little else ">"
    proto = RawElement(at, tag, vr.encode() if first.vr else None, 0, 0, 0, 0, 0, first.little)
    payload = _encode(proto, value)
    head = struct.pack(e + "HH", tag >> 16, tag & 0xFFFF)
    if first.vr is None:
        head += struct.pack(e + "I", len(payload))
    elif vr.encode() in _LONG_VRS:
        head += vr.encode() + b"\0\0" + struct.pack(e + "I", len(payload))
    else:
        head += vr.encode() + struct.pack(e + "H", len(payload))
    log.append(f"value {keyword}: absent, added {payload!r} at {at}")
    return data[:at] + head + payload + data[at:]


def _mutate(data: bytes, m: Mutation, log: list[str]) -> bytes:
    elements = walk(data)
    el = _find(elements, m.target)
    if m.op == "truncate" and el is None:
        el = RawElement(0, 0, None, 0, 0, len(data), 0, 0, True)
    if el is None and m.op == "value" and isinstance(m.target, str):
        return _insert_new(data, elements, m.target, m.arg, log)
    if el is None:
        log.append(f"{m!r}: no such element")
        return data
    if m.op == "truncate":  # cut inside the element (header or value)
        end = el.end if el.defined else len(data)
        cut = min(len(data), el.start + int((end - el.start) * float(m.arg)))
        log.append(f"truncate at {cut} of {len(data)} (in element at {el.start})")
        return data[:cut]
    where = f"({el.tag >> 16:04X},{el.tag & 0xFFFF:04X})@{el.start}"
    if m.op == "drop":
        end = el.end if el.defined else el.value_at
        log.append(f"drop {where}")
        return data[: el.start] + data[end:]
    if m.op == "duplicate":
        end = el.end if el.defined else el.value_at
        log.append(f"duplicate {where}")
        return data[:end] + data[el.start : end] + data[end:]
    if m.op == "value":
        value = _encode(el, m.arg)
        log.append(f"value {where} = {value!r}")
        return _replace_value(data, el, value)
    if m.op == "wrap":
        before, after = m.arg
        old = data[el.value_at : el.end] if el.defined else b""
        log.append(f"wrap {where} {old!r} in {before!r}...{after!r}")
        return _replace_value(data, el, before + old.rstrip(b" \0") + after)
    if m.op == "vr":
        if el.vr is None:
            log.append(f"vr {where}: implicit, unchanged")
            return data
        log.append(f"vr {where} {el.vr!r} -> {m.arg!r}")
        return data[: el.start + 4] + bytes(m.arg) + data[el.start + 6 :]
    if m.op == "length":
        new = {
            "zero": 0,
            "one": 1,
            "minus1": el.length - 1,
            "plus1": el.length + 1,
            "double": el.length * 2,
            "undefined": UNDEFINED,
            "max": 0xFFFFFFFE,
            "huge": len(data) * 1000,
        }[m.arg]
        log.append(f"length {where} {el.length} -> {new & ((1 << 8 * el.len_size) - 1)}")
        return data[: el.len_at] + _pack_length(el, new) + data[el.len_at + el.len_size :]
    if m.op == "noise":  # random bytes inside PixelData (fragments and item headers too)
        pixels = _find(elements, "PixelData")
        if pixels is None:
            log.append("noise: no PixelData")
            return data
        end = pixels.end if pixels.defined else len(data)
        if end <= pixels.value_at:
            return data
        rng = random.Random(m.arg)
        buf = bytearray(data)
        count = rng.randint(1, 64)
        for _ in range(count):
            buf[rng.randrange(pixels.value_at, min(end, len(buf)))] = rng.randrange(256)
        log.append(f"noise: {count} random bytes in PixelData (rng {m.arg})")
        return bytes(buf)
    if m.op == "insert":
        log.append(f"insert {m.arg!r} before {where}")
        return data[: el.start] + bytes(m.arg) + data[el.start :]
    raise ValueError(m.op)


def _nest(ds: Dataset, arg: tuple[str, int]) -> None:
    container, depth = arg
    inner = Dataset()
    inner.InstitutionName = P.PHI["InstitutionName"]
    inner.PersonName = P.NESTED_PHI["nested_person"]
    inner.PatientID = P.PHI["PatientID"]
    inner.ReferencedSOPInstanceUID = P.uid(4, 4, depth)
    for _ in range(depth):
        outer = Dataset()
        if container == "private":
            block = outer.private_block(0x0011, "FUZZ NEST", create=True)
            block.add_new(0x01, "SQ", Sequence([inner]))
        elif container == "unknown":  # an undefined public tag: UN in explicit VR
            outer.add(DataElement(0x00331010, "SQ", Sequence([inner])))
        else:
            setattr(outer, container, Sequence([inner]))
        outer.PatientName = P.PHI["PatientName"]
        inner = outer
    for elem in inner:
        ds.add(elem)


def _apply_edit(ds: Dataset, edit: Edit) -> None:
    if edit.op == "nest":
        _nest(ds, edit.arg)
    elif edit.op == "charset":
        charset, suffix = edit.arg
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
        ds.PatientName = P.PHI["PatientName"] + suffix
        ds.InstitutionName = P.PHI["InstitutionName"] + suffix.replace("=", " ")
    elif edit.op == "un_phi":  # PHI under VR UN: a known tag, an unknown one, a private one
        ds[0x00100010] = DataElement(0x00100010, "UN", P.PHI["PatientName"].encode())
        ds.add(DataElement(0x00350010, "UN", P.PHI["PatientID"].encode()))
        ds.add(DataElement(0x00190010, "LO", "FUZZ UN"))
        ds.add(DataElement(0x00191001, "UN", P.NESTED_PHI["private_name"].encode()))
    elif edit.op == "icon":  # an icon image (a second PixelData) inside a sequence
        icon = Dataset()
        icon.Rows = icon.Columns = 4
        icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
        icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
        icon.PatientName = P.PHI["PatientName"]
        icon.PixelData = bytes(range(16)) * int(edit.arg)
        ds.IconImageSequence = Sequence([icon])
    elif edit.op == "reencode":
        if not ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.file_meta.TransferSyntaxUID = edit.arg
    elif edit.op == "empty_sequences":
        ds.SourceImageSequence = Sequence([Dataset(), Dataset()])
        ds.ReferencedImageSequence = Sequence([])
    else:
        raise ValueError(edit.op)


def build(recipe: Recipe) -> Built:
    """The bytes of a fuzzed file, and what was done to make them."""
    data = seeds()[recipe.seed]
    log = [f"seed {recipe.seed} ({len(data)} bytes)"]
    if recipe.edits:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(data))
                for edit in recipe.edits:
                    _apply_edit(ds, edit)
                data = _serialize(ds)
            log.append(f"edits {list(recipe.edits)} -> {len(data)} bytes")
        except Exception as exc:  # noqa: BLE001 - pydicom could not write it: keep the seed
            log.append(f"edits {list(recipe.edits)} not applied ({type(exc).__name__}: {exc})")
    for m in recipe.mutations:
        data = _mutate(data, m, log)
    return Built(data, log)


# ---- strategies ----------------------------------------------------------------------------

_targets = st.one_of(st.sampled_from(TARGETS), st.integers(0, 400))


@st.composite
def _value_mutation(draw) -> Mutation:
    keyword = draw(st.sampled_from(sorted(VALUES)))
    return Mutation("value", keyword, draw(st.sampled_from(VALUES[keyword])))


mutations = st.one_of(
    _value_mutation(),
    st.builds(Mutation, st.just("drop"), _targets),
    st.builds(Mutation, st.just("duplicate"), _targets),
    st.builds(
        Mutation, st.just("wrap"), st.sampled_from(PHI_KEYWORDS), st.sampled_from(TEXT_WRAPS)
    ),
    st.builds(Mutation, st.just("vr"), _targets, st.sampled_from(VRS)),
    st.builds(Mutation, st.just("length"), _targets, st.sampled_from(LENGTHS)),
    st.builds(Mutation, st.just("noise"), st.just("PixelData"), st.integers(0, 2**16)),
    st.builds(Mutation, st.just("truncate"), _targets, st.floats(0.0, 1.0)),
    st.builds(
        Mutation,
        st.just("insert"),
        _targets,
        st.sampled_from(
            (b"\0" * 8, b"\xfe\xff\x00\xe0\xff\xff\xff\xff", b"\xfe\xff\xdd\xe0\0\0\0\0")
        ),
    ),
)

edits = st.one_of(
    st.builds(
        Edit,
        st.just("nest"),
        st.tuples(
            st.sampled_from(
                ("SourceImageSequence", "ReferencedImageSequence", "private", "unknown")
            ),
            st.integers(1, 48),
        ),
    ),
    st.builds(
        Edit,
        st.just("charset"),
        st.tuples(
            st.sampled_from(CHARSETS), st.sampled_from(("", "=山田^太郎", "=Ŵéŕď", "\u00e9"))
        ),
    ),
    st.builds(Edit, st.just("un_phi")),
    st.builds(Edit, st.just("icon"), st.integers(0, 2)),
    st.builds(
        Edit,
        st.just("reencode"),
        st.sampled_from(
            (ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
        ),
    ),
    st.builds(Edit, st.just("empty_sequences")),
)


def recipes(seed_names: list[str]):
    return st.builds(
        Recipe,
        st.sampled_from(seed_names),
        st.lists(edits, max_size=2).map(tuple),
        st.lists(mutations, min_size=1, max_size=3).map(tuple),
    )


def write_batch(batch: list[Recipe], folder: Path) -> dict[str, Built]:
    """Build every recipe into ``folder``/NN.dcm; returns relpath -> Built."""
    folder.mkdir(parents=True, exist_ok=True)
    built = {}
    for i, recipe in enumerate(batch):
        b = build(recipe)
        rel = f"{i:02d}.dcm"
        (folder / rel).write_bytes(b.data)
        built[rel] = b
    return built


# ---- reproducers of defects the fuzz suite found -------------------------------------------


def rle_overrun_file() -> bytes:
    """A 1x1 16-bit RLE Lossless image whose two segments each decode to 2 bytes instead of
    1 (PackBits literal run ``01 00 00``): pylibjpeg-rle's decoder panics (Rust index out of
    bounds) with ``pyo3_runtime.PanicException``, a BaseException that is not an Exception."""
    from pydicom.encaps import encapsulate

    ds = P.phantom("MR", seed=21, rows=1, cols=1)
    segment = b"\x01\x00\x00"
    frame = struct.pack("<16I", 2, 64, 64 + len(segment), *[0] * 13) + segment * 2
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return P.to_bytes(ds)


def is_decoder_panic(exc: BaseException) -> bool:
    """A Rust decoder's panic surfacing through pyo3 (not an Exception subclass)."""
    return type(exc).__name__ == "PanicException" and not isinstance(exc, Exception)


def palette_without_lut_file() -> bytes:
    """A CT phantom whose PhotometricInterpretation says PALETTE COLOR but that has no
    palette lookup tables: pydicom's ``apply_color_lut`` raises ValueError("No suitable
    Palette Color Lookup Table Module found"), which ingestion reports as internal_error."""
    ds = P.phantom("CT", seed=32)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    return P.to_bytes(ds)


@dataclass(frozen=True)
class KnownDefect:
    """A product defect the fuzz suite found: its reproducer, and the internal_error message
    it gives (None: an exception escapes ingest() instead)."""

    name: str
    reproducer: object  # () -> bytes
    message: str | None


def wrong_length_rows_file() -> bytes:
    """A CT phantom whose Rows element says VR UL (4-byte values) but holds 2 bytes (the VR
    bytes changed from US): pydicom raises BytesLengthException when image_info reads Rows,
    reported as internal_error."""
    data = P.to_bytes(P.phantom("CT", seed=35))
    rows = next(el for el in walk(data) if el.tag == 0x00280010)
    return data[: rows.start + 4] + b"UL" + data[rows.start + 6 :]


def transfer_syntax_as_us_file() -> bytes:
    """An MR phantom whose file meta TransferSyntaxUID has VR US instead of UI: pydicom reads
    it as a list of numbers and image_info's ``.is_compressed`` raises AttributeError,
    reported as internal_error."""
    data = P.to_bytes(P.phantom("MR", seed=36))
    ts = next(el for el in walk(data) if el.tag == 0x00020010)
    return data[: ts.start + 4] + b"US" + data[ts.start + 6 :]


def j2k_grey_declared_rgb_file() -> bytes:
    """A JPEG 2000 (lossless) MR phantom, one component, whose PhotometricInterpretation
    says RGB: GDCM's JPEG 2000 codec throws a C++ exception nothing catches
    (gdcmJPEG2000Codec.cxx:796 ``image->numcomps == ...GetSamplesPerPixel()``) and the
    whole process aborts (SIGABRT)."""
    return build(
        Recipe("phantom/MR_j2k", (), (Mutation("value", "PhotometricInterpretation", "RGB"),))
    ).data


KNOWN_DEFECTS = (
    KnownDefect("RLE decoder panic", rle_overrun_file, None),
    KnownDefect(
        "PALETTE COLOR without LUT",
        palette_without_lut_file,
        "No suitable Palette Color Lookup Table Module found",
    ),
    KnownDefect(
        "value length does not fit its VR",
        wrong_length_rows_file,
        "BytesLengthException",
    ),
    KnownDefect(
        "TransferSyntaxUID not a UID",
        transfer_syntax_as_us_file,
        "object has no attribute 'is_compressed'",
    ),
)
