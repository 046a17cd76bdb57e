"""Why an input file was not turned into examples: reason codes shared by the report."""

from __future__ import annotations

from medflow.core.errors import InputError

# Reason codes a quarantined input can carry (stable: they appear in reports and dashboards).
REASONS = {
    "not_dicom": "not a DICOM Part 10 file (no 'DICM' after the 128-byte preamble)",
    "executable_preamble": "the preamble holds executable code (PE/ELF/Mach-O; CVE-2019-11687)",
    "unreadable": "the DICOM data set could not be parsed",
    "truncated": "an element's declared length runs past the end of the file",
    "deflate_bomb": "deflated data set expands beyond the configured limit",
    "no_pixel_data": "the instance has no image pixels (e.g. SR, presentation state)",
    "bad_geometry": "rows/columns/bits/samples are missing or invalid",
    "too_many_pixels": "declared image size is over the configured pixel cap",
    "pixel_length_mismatch": "PixelData length does not match rows x cols x frames x samples x bits",
    "codestream_mismatch": "a compressed frame's own size differs from Rows/Columns (refused "
    "before decoding: a decompression bomb or a broken file)",
    "unsupported_transfer_syntax": "no installed pixel decoder handles this transfer syntax",
    "decode_error": "pixel data could not be decoded",
    "burned_in_annotation": "burned-in annotation YES (any modality), or not NO on a "
    "US/SC/OT/XC/ES image or one without a modality",
    "symlink": "a symbolic link (file or folder): only regular files inside the input are read",
    "unlabeled": "a label manifest was given but has no row for this instance",
    "mask_unreadable": "the manifest's mask file is missing or not a 2-D label image",
    "mask_mismatch": "the mask's rows x columns differ from the image's (or several frames share it)",
    "label_invalid": "a manifest label cell the task cannot train on (e.g. a malformed boxes "
    "cell, a box outside the image, an SR without planar ROIs or of another image)",
    "split_conflict": "the manifest puts this instance in another split than earlier files of its patient",
    "io_error": "the file could not be read from disk",
    "fetch_failed": "a DICOMweb instance listed by QIDO-RS could not be retrieved (WADO-RS) "
    "after retries, e.g. deleted from the PACS since the search",
    "worker_crashed": "processing the file killed its worker process (a native decoder fault)",
    "internal_error": "a medflow bug while processing this file (please report it with the message)",
}


class DicomRejected(InputError):
    """An input that cannot become an example; carries a stable reason code.

    Args:
        reason: one of :data:`REASONS`.
        message: what is wrong with this file, and what to do about it.
    """

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
