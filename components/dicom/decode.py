"""Decoding one frame's stored values: a fast path for plain little-endian monochrome data,
pydicom's decoder plugins for the rest, and a reason code for every failure."""

from __future__ import annotations

import numpy as np
import pydicom

from medflow.components.dicom.errors import DicomRejected
from medflow.components.dicom.reader import HeaderView, header_view

_ENCAPSULATED_HINT = "install the pinned pixel plugins (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, python-gdcm)"


_NATIVE_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def _native_frame(ds: pydicom.Dataset | HeaderView, index: int | None) -> np.ndarray | None:
    """The common case without pydicom's decoder machinery (~0.5 ms a call): uncompressed
    little-endian monochrome with 8/16/32 bits allocated. Same result as
    ``pydicom.pixels.pixel_array`` (unused high bits corrected the same way); None for
    anything else, which then takes pydicom's path. A test compares the two."""
    h = header_view(ds)
    try:
        if (
            str(h.ds.file_meta.get("TransferSyntaxUID", "")) not in _NATIVE_LE
            or int(h.get("SamplesPerPixel", 1) or 1) != 1
            or not str(h.get("PhotometricInterpretation", "")).startswith("MONOCHROME")
        ):
            return None
        bits = int(required(h, "BitsAllocated"))
        stored = int(required(h, "BitsStored"))
        signed = int(required(h, "PixelRepresentation")) == 1
        rows, cols = int(required(h, "Rows")), int(required(h, "Columns"))
        frames = int(h.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if bits not in (8, 16, 32) or not 0 < stored <= bits or "PixelData" not in h:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    per_frame = rows * cols
    first = (index or 0) * per_frame
    data = h.get("PixelData")
    if len(data) < (frames * per_frame) * dtype.itemsize or (index or 0) >= frames:
        return None
    arr = np.frombuffer(data, dtype, count=per_frame, offset=first * dtype.itemsize)
    arr = arr.reshape(rows, cols).copy()
    if stored < bits:  # as pydicom's correct_unused_bits: shift out the unused high bits
        shift = bits - stored
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    return arr


def decode_frame(h: HeaderView, index: int | None, name: str) -> np.ndarray:
    from pydicom.pixels import pixel_array

    native = _native_frame(h, index)
    if native is not None:
        return native
    ds = h.ds
    try:
        arr = pixel_array(ds, index=index)
    except (NotImplementedError, RuntimeError) as exc:
        text = str(exc)
        ts = ds.file_meta.get("TransferSyntaxUID", "?")
        if not _decoder_available(ts):
            raise DicomRejected(
                "unsupported_transfer_syntax",
                f"{name}: cannot decode transfer syntax {ts}: {text[:200]}; {_ENCAPSULATED_HINT}",
            ) from exc
        raise DicomRejected(
            "decode_error", f"{name}: pixel data could not be decoded: {text[:300]}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure rejects this input only
        raise DicomRejected(
            "decode_error",
            f"{name}: pixel data could not be decoded ({type(exc).__name__}: {str(exc)[:300]})",
        ) from exc
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(arr, ds)
        except (ValueError, KeyError, AttributeError) as exc:
            raise DicomRejected(
                "decode_error", f"{name}: PALETTE COLOR image without usable lookup tables ({exc})"
            ) from exc
    return arr


def _decoder_available(syntax) -> bool:
    """Whether an installed pixel decoder plugin handles ``syntax`` (so that a failure is
    the data's fault, not a missing plugin)."""
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        return False


def required(h: HeaderView, keyword: str) -> object:
    """A header value that must be there (AttributeError naming it otherwise)."""
    value = h.get(keyword)
    if value is None:
        raise AttributeError(f"{keyword} is missing")
    return value
