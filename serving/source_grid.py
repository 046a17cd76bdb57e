"""Per-pixel model outputs back onto the source image: the inverse of the preprocessing's
aspect-keeping resample and padding."""

from __future__ import annotations

import functools

import numpy as np

from medflow.components.dicom.pixels import resample_mask


def to_source_grid(
    values: np.ndarray,
    rows: int,
    cols: int,
    spacing: tuple[float, float] | None,
    size: tuple[int, int] | None,
) -> np.ndarray:
    """Per-pixel model output ``[r, c]`` or ``[r, c, k]`` (model-input grid) -> the source
    image's ``rows x cols`` grid: the preprocessing's padding is cut off and the rest is
    resized back (bilinear), the inverse of :func:`components.dicom.pixels.to_model_input`'s
    aspect-keeping resample."""
    from PIL import Image

    top, left, height, width = _content_box(rows, cols, spacing, tuple(size) if size else None)
    values = np.asarray(values, dtype=np.float32)
    squeeze = values.ndim == 2
    if squeeze:
        values = values[..., None]
    crop = values[top : top + height, left : left + width]
    if crop.shape[:2] == (rows, cols):
        out = np.ascontiguousarray(crop)
    else:
        out = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(crop[..., k]), mode="F").resize(
                        (cols, rows), Image.BILINEAR
                    )
                )
                for k in range(crop.shape[-1])
            ],
            axis=-1,
        )
    return out[..., 0] if squeeze else out


@functools.lru_cache(maxsize=64)
def _content_box(
    rows: int, cols: int, spacing: tuple[float, float] | None, size: tuple[int, int] | None
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image inside the model input: where ingestion's own
    mask resampling puts an all-ones mask (so the two can never disagree)."""
    if size is None:
        return 0, 0, rows, cols
    inside = resample_mask(np.ones((rows, cols), np.uint8), size, spacing) > 0
    r = np.flatnonzero(inside.any(axis=1))
    c = np.flatnonzero(inside.any(axis=0))
    return int(r[0]), int(c[0]), int(r[-1] - r[0] + 1), int(c[-1] - c[0] + 1)
