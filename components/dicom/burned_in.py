"""Looking for text burned into the pixels (names, IDs, dates) with OCR, as the way to admit
an image whose header does not say it has none (BurnedInAnnotation absent on a modality
where text is common, or no modality at all).

OCR is Tesseract (Debian's ``tesseract-ocr``), run as a program on a PNG of each frame that
ingestion would use, at full resolution. It finds printed text, not every mark a person can
read: the decision and what it rests on are recorded per file in the ingest report, and an
image whose header says YES is never admitted this way.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
from PIL import Image

from medflow.components.dicom.decode import decode_frame
from medflow.components.dicom.pixels import frame_indices, image_info
from medflow.components.dicom.reader import HeaderView
from medflow.core.errors import ConfigError

# A word of text: three or more letters or digits in a row, read with confidence (OCR on
# ultrasound speckle or noise yields one- and two-letter words at confidence <= 60; printed
# labels read at 90+).
_WORD = re.compile(r"[A-Za-z0-9]{3,}")
MIN_CONFIDENCE = 70.0
_TIMEOUT_S = 60


def tesseract() -> str:
    """The tesseract program.

    Raises:
        ConfigError: it is not installed.
    """
    path = shutil.which("tesseract")
    if path is None:
        raise ConfigError(
            "--scan-burned-in needs Tesseract OCR: install it (Debian: apt-get install "
            "tesseract-ocr) or leave the images quarantined"
        )
    return path


def words_in(image: np.ndarray) -> list[str]:
    """Words Tesseract reads with confidence in an 8-bit grey image (sparse text mode:
    labels anywhere on the image)."""
    png = io.BytesIO()
    Image.fromarray(image, mode="L").save(png, format="PNG")
    proc = subprocess.run(
        [tesseract(), "stdin", "stdout", "--psm", "11", "-l", "eng", "tsv"],
        input=png.getvalue(),
        capture_output=True,
        timeout=_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise ConfigError(f"tesseract failed: {proc.stderr.decode(errors='replace')[:200]}")
    words = []
    for line in proc.stdout.decode(errors="replace").splitlines()[1:]:
        cells = line.split("\t")  # level ... conf, text
        if len(cells) == 12 and float(cells[10]) >= MIN_CONFIDENCE:
            words += _WORD.findall(cells[11])
    return words


def scan(h: HeaderView, frames: str, max_pixels: int, name: str) -> int:
    """Number of words found in the frames ingestion would use (``frames`` as in
    :class:`~medflow.core.pixel_spec.PixelSpec`)."""
    info = image_info(h, max_pixels, name)
    found = 0
    for index in frame_indices(info.frames, frames):
        frame = decode_frame(h, index if info.frames > 1 else None, name)
        found += len(words_in(_display(frame)))
    return found


def _display(frame: np.ndarray) -> np.ndarray:
    """The frame as 8-bit grey, stretched between its 1st and 99th percentiles."""
    values = frame.astype(np.float32)
    if values.ndim == 3:  # colour: text is usually white or yellow on the image
        values = values.max(axis=-1)
    lo, hi = np.percentile(values, (1, 99))
    scaled = np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return (scaled * 255).astype(np.uint8)
