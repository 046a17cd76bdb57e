"""Safe DICOM reading: strict parsing with checks that come before any decoding.

Strict when reading untrusted files: the 128-byte preamble must not hold an executable
(CVE-2019-11687, "DICOM polyglots"), deflated data sets are expanded with a limit, and
every declared element length must fit in the file.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import _read_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pydicom.values import convert_DS_string, convert_IS_string

from medflow.components.dicom.errors import DicomRejected

# Magic numbers of executables that a polyglot preamble can carry.
_EXECUTABLE_MAGIC = (
    b"MZ",  # PE / DOS
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",  # Mach-O 32
    b"\xfe\xed\xfa\xcf",  # Mach-O 64
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # Mach-O universal
)


@dataclass(frozen=True)
class ReadLimits:
    """Caps applied before anything is decoded.

    Attributes:
        max_pixels: rows x cols x frames x samples above which an image is refused.
        max_inflate_ratio: a deflated data set may expand at most this many times.
        max_inflated_bytes: and to at most this many bytes.
    """

    max_pixels: int = 2**28
    max_inflate_ratio: int = 200
    max_inflated_bytes: int = 1 << 30


def check_preamble(data: bytes, name: str) -> None:
    """Reject non-DICOM files and executable preambles."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise DicomRejected("not_dicom", f"{name}: not a DICOM Part 10 file (no DICM marker)")
    if any(data[: len(m)] == m for m in _EXECUTABLE_MAGIC):
        raise DicomRejected(
            "executable_preamble",
            f"{name}: the 128-byte preamble starts with executable magic {data[:4]!r}; "
            "the file is a possible polyglot (CVE-2019-11687) and is not read",
        )


def _check_inflate(data: bytes, limits: ReadLimits, name: str) -> None:
    """Expand a deflated data set chunk by chunk, refusing decompression bombs."""
    if DeflatedExplicitVRLittleEndian.encode() not in data:
        return  # cannot be deflated; skips a second parse of the file meta (hot path)
    fp = io.BytesIO(data)
    fp.seek(132)
    # The file meta group is read alone first: dcmread would inflate the whole data set.
    meta = _read_file_meta_info(fp)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    start = fp.tell()
    limit = min(limits.max_inflated_bytes, max(1 << 20, limits.max_inflate_ratio * len(data)))
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    buf, total = data[start:], 0
    while buf:
        total += len(inflater.decompress(buf, 1 << 20))
        if total > limit:
            raise DicomRejected(
                "deflate_bomb",
                f"{name}: deflated data set expands past {limit} bytes "
                f"({len(data)} bytes on disk); refused as a decompression bomb",
            )
        buf = inflater.unconsumed_tail


def parse(data: bytes, name: str, limits: ReadLimits = ReadLimits()) -> pydicom.Dataset:
    """Parse a DICOM Part 10 byte string after the safety checks.

    Raises:
        DicomRejected: with a reason code when the file must not or cannot be used.
    """
    check_preamble(data, name)
    try:
        _check_inflate(data, limits, name)
        # force=False: only real Part 10 files; no guessing of raw data sets.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
            _materialise(ds, name)
        for w in caught:
            if "end of file" in str(w.message).lower():
                raise DicomRejected("truncated", f"{name}: {w.message}; the file is truncated")
    except DicomRejected:
        raise
    except (InvalidDicomError, EOFError, OSError) as exc:
        raise DicomRejected(
            "truncated" if _is_eof(exc) else "unreadable", f"{name}: {exc}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any parser failure is a rejected input
        reason = "truncated" if _is_eof(exc) else "unreadable"
        raise DicomRejected(
            reason, f"{name}: cannot parse DICOM ({type(exc).__name__}: {exc})"
        ) from exc
    return ds


def read_dicom(path: str | Path, limits: ReadLimits = ReadLimits()) -> pydicom.Dataset:
    """Read one DICOM file safely (see :func:`parse`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DicomRejected(
            "io_error", f"{path}: cannot read file ({exc.strerror or exc})"
        ) from exc
    return parse(data, str(path), limits)


def _is_eof(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, EOFError) or "end of file" in text or "eof" in text or "truncat" in text


def _materialise(ds: pydicom.Dataset, name: str) -> None:
    """Check declared lengths and parse every sequence (pydicom reads them lazily) at every
    depth, so a truncated file fails here, not half-way through a later step. Leaf values
    stay raw bytes (converting them all cost ~2 ms a file and detected nothing more)."""
    for tag, raw in list(ds.items()):  # elements as read (RawDataElement), unconverted
        _check_declared_length(raw, tag, name)
        if raw.VR == "SQ":
            for item in ds[tag].value or ():  # parses the sequence's items
                _materialise(item, name)


def _check_declared_length(raw, tag: int, name: str) -> None:
    """pydicom quietly shortens a value whose declared length passes the end of the file."""
    length = getattr(raw, "length", None)
    if length in (None, 0xFFFFFFFF) or raw.value is None or isinstance(raw.value, list):
        return
    if len(raw.value) < length and tag != 0xFFFCFFFC:  # (FFFC,FFFC) is padding
        raise DicomRejected(
            "truncated",
            f"{name}: element {raw.tag} declares {length} bytes but the file holds "
            f"{len(raw.value)}; the file is truncated or corrupt — re-export it from the source",
        )


# Single values that HeaderView decodes itself (see its docstring).
_PLAIN_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "LO", "SH", "UC"})
_DATETIME_VRS = frozenset({"DA", "DT", "TM"})
_BINARY_INT_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV"})  # pydicom keeps the bytes


class HeaderView:
    """Read-only access by keyword to a parsed data set's values, for the hot path.

    pydicom converts an element on first access (~30 µs: hooks, validation, a new
    DataElement). Plain values are decoded here straight from the raw bytes instead, into
    values equal to pydicom's: one ASCII text value of the VRs above (no value separator,
    no escape sequences), one US/SS/UL/SL number, IS/DS numbers (by pydicom's own
    converters), the bytes of OB/OW/OD/OF/OL/OV, empty values. Anything else (sequences,
    several text values, other character sets, PN, UN or ambiguous VRs, elements already
    converted) is read through pydicom. So ``view.get(k) == ds.get(k)`` for every keyword
    (a test checks this on real files); the data set is not modified. Each value is looked
    up once per view.

    Attributes:
        ds: the data set (for pydicom's decoders and everything else).
    """

    __slots__ = ("ds", "_elements", "_cache")

    def __init__(self, ds: pydicom.Dataset):
        self.ds = ds
        # The data set's live tag -> element dict, read-only: a lookup without get_item's
        # tag normalisation (a few µs each, ~30 lookups a file).
        self._elements = ds.items().mapping
        self._cache: dict[str, tuple[str, object] | None] = {}

    def element(self, keyword: str) -> tuple[str, object] | None:
        """(VR, value) of ``keyword``, or None when the data set lacks it."""
        try:
            return self._cache[keyword]
        except KeyError:
            pass
        found = self._lookup(keyword)
        self._cache[keyword] = found
        return found

    def get(self, keyword: str, default: object = None) -> object:
        found = self.element(keyword)
        return default if found is None else found[1]

    def __contains__(self, keyword: str) -> bool:
        return self.element(keyword) is not None

    def _lookup(self, keyword: str) -> tuple[str, object] | None:
        tag = tag_for_keyword(keyword)
        if tag is None:
            return None
        raw = self._elements.get(tag)
        if raw is None:
            return None
        if isinstance(raw, RawDataElement):
            vr = raw.VR or dictionary_VR(tag)
            value = _plain_value(vr, raw.value, raw.is_little_endian)
            if value is not None:
                return vr, value
        try:
            elem = self.ds[tag]  # pydicom's conversion
        except BytesLengthException as exc:  # a value whose length does not fit its VR
            raise DicomRejected(
                "unreadable",
                f"{keyword} {Tag(tag)}: its value does not fit its VR ({str(exc)[:120]}); "
                "the file is corrupt — re-export it from the source",
            ) from None
        except AttributeError as exc:  # an ambiguous VR (OB or OW) its deciding element lacks
            raise DicomRejected(
                "unreadable",
                f"{keyword} {Tag(tag)}: its VR cannot be resolved ({str(exc)[:120]}); "
                "the file is corrupt — re-export it from the source",
            ) from None
        return elem.VR, elem.value


def header_view(ds: pydicom.Dataset | HeaderView) -> HeaderView:
    """``ds`` itself when it is a view, else a new view of it."""
    return ds if isinstance(ds, HeaderView) else HeaderView(ds)


_PLAIN_VRS = _PLAIN_TEXT_VRS | _BYTES_VRS | set(_BINARY_INT_VRS) | {"DS", "IS"}


def _plain_value(vr: str, data: object, little_endian: bool) -> object:
    """The value pydicom would convert ``data`` to, when it is plain (see HeaderView); else
    None (also for an empty value of a number VR, which pydicom reads as None too)."""
    if not isinstance(data, bytes) or vr not in _PLAIN_VRS:
        return None
    if not data:
        return empty_value_for_VR(vr)
    if vr in _BYTES_VRS:
        return data
    fmt = _BINARY_INT_VRS.get(vr)
    if fmt is not None:
        if len(data) != struct.calcsize(fmt):
            return None
        return struct.unpack(("<" if little_endian else ">") + fmt, data)[0]
    if not data.isascii() or b"\x1b" in data:
        return None
    if vr in ("DS", "IS"):  # pydicom's own converters, minus its per-element machinery
        convert = convert_DS_string if vr == "DS" else convert_IS_string
        try:
            return convert(data, little_endian)
        except (ValueError, TypeError, OverflowError):
            return None  # pydicom's element conversion decides (warns, raises or UN)
    if b"\\" in data:
        return None
    if vr in _DATETIME_VRS and pydicom.config.datetime_conversion:
        return None  # pydicom returns its DA/DT/TM objects then
    return data.decode("ascii").rstrip("\x00 ")
