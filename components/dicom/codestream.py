"""The size a compressed frame decodes to, read from its own codestream header before any
decoding: a file that declares 28x28 in Rows/Columns but holds a 30000x30000 JPEG must be
refused before a decoder allocates gigabytes (a decompression bomb).

Covers the JPEG family (baseline, extended, lossless: SOF markers), JPEG-LS (SOF55) and
JPEG 2000 / HTJ2K (SIZ marker of a raw codestream, or inside a JP2 box file). Other
encodings (RLE, deflate) decode to the size the header declares, which the pixel cap
already bounds.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from medflow.components.dicom.errors import DicomRejected

# SOFn markers (sizes follow them), skipping DHT (C4), JPG (C8) and DAC (CC); F7 = JPEG-LS.
_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field
_SCAN_LIMIT = 1 << 16  # headers sit at the start; a marker later than this is not looked for


def frame_size(data: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) a compressed frame decodes to, from its codestream;
    None when the encoding is not one of those above, or its header cannot be found."""
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data[:2] == b"\xff\x4f":
        return _j2k(data, 0)
    if data[4:8] == b"jP  ":
        at = data.find(b"\xff\x4f\xff\x51", 0, _SCAN_LIMIT)  # the codestream in its jp2c box
        return _j2k(data, at) if at >= 0 else None
    return None


def _jpeg(data: bytes) -> tuple[int, int, int] | None:
    pos = 2
    end = min(len(data), _SCAN_LIMIT)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF:
            if pos + 10 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return height, width, data[pos + 9]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _j2k(data: bytes, at: int) -> tuple[int, int, int] | None:
    # SOC (FF4F), then SIZ (FF51): Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz,
    # XTOsiz, YTOsiz, Csiz.
    if data[at + 2 : at + 4] != b"\xff\x51" or at + 42 > len(data):
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", data, at + 8)
    (csiz,) = struct.unpack_from(">H", data, at + 40)
    return ysiz - yosiz, xsiz - xosiz, csiz


def frame_headers(data: bytes) -> Iterator[bytes]:
    """The start (up to 64 KiB) of each fragment of encapsulated pixel data that begins a
    codestream (a JPEG SOI, a JPEG 2000 SOC or a JP2 box), read from the item headers
    without copying the fragments: frames are checked at the cost of their headers."""
    view = memoryview(data)
    pos, first = 0, True
    while pos + 8 <= len(view):
        group, element, length = struct.unpack_from("<HHI", view, pos)
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return  # a sequence delimiter, or not an item: the end of the fragments
        start = pos + 8
        if not first:  # the first item is the Basic Offset Table
            head = bytes(view[start : start + min(length, _SCAN_LIMIT)])
            if head[:2] in (b"\xff\xd8", b"\xff\x4f") or head[4:8] == b"jP  ":
                yield head
        first = False
        pos = start + length


def check_frames(
    data: bytes, rows: int, cols: int, samples: int, max_pixels: int, name: str
) -> None:
    """Each compressed frame's own size (its codestream header) against Rows/Columns,
    SamplesPerPixel and the pixel cap, before a decoder allocates anything (decompression
    bombs; a decoder that aborts the process on a component mismatch)."""
    for index, head in enumerate(frame_headers(data)):
        size = frame_size(head)
        if size is None:
            continue
        height, width, components = size
        if height * width * max(components, 1) > max_pixels:
            raise DicomRejected(
                "too_many_pixels",
                f"{name}: frame {index} decodes to {height}x{width}x{components} pixels, over "
                f"the cap of {max_pixels}; refused before decoding",
            )
        if (height, width) != (rows, cols) or components != samples:
            raise DicomRejected(
                "codestream_mismatch",
                f"{name}: frame {index}'s compressed data is {height}x{width} with {components} "
                f"component(s) but the header declares {rows}x{cols} with {samples}; refused "
                "before decoding (a decompression bomb or a broken file: re-export it from the "
                "source)",
            )
