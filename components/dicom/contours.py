"""Contour polygons as segmentation masks: read a contour text file, fill it on a pixel grid.

A contour file (Sunnybrook ``*-icontour-manual.txt`` / ``*-ocontour-manual.txt``) holds one
polygon vertex per line, ``x y`` in pixel units (x along columns, y along rows), the
polygon closing from the last vertex back to the first.

Pixel-centre convention: a pixel is inside the mask when its centre is inside the polygon
(even-odd rule; a centre exactly on an edge counts for left/top edges only, so two polygons
sharing an edge never both claim a pixel). The mask's area therefore equals the polygon's
(shoelace) area up to the pixels the boundary crosses. Contour coordinates are read as
1-based pixel centres (:data:`CONTOUR_ORIGIN`): the pixel at 0-based row ``r``, column ``c``
has its centre at ``(x, y) = (c + 1, r + 1)``, the MATLAB image convention. This was measured
on the 96 Sunnybrook frames, not assumed: the image gradient along the contours peaks when
the contour is read with origin 1 (mean gradient 31.5 vs 27.8 with origin 0 and 30.6 with
origin 0.5, i.e. the corner convention); origin 0 would shift every mask by one pixel
(1.4 mm) towards the bottom right. Pass ``origin=0`` for 0-based pixel-centre files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medflow.components.dicom.errors import DicomRejected

CONTOUR_SUFFIXES = (".txt",)
CONTOUR_ORIGIN = 1.0
MAX_VERTICES = 100_000


def is_contour_file(path: str | Path) -> bool:
    """True when a mask path names a contour text file (rasterised on the instance grid)."""
    return Path(path).suffix.lower() in CONTOUR_SUFFIXES


def read_contour(path: str | Path, name: str = "") -> np.ndarray:
    """The polygon of a contour file as float64 ``[n, 2]`` (x, y) vertices.

    Raises:
        DicomRejected: ``mask_unreadable`` naming the file (and line) when it is missing,
            not text, has a line that is not two finite numbers, or has fewer than 3 vertices.
    """
    path = Path(path)
    who = f"{name}: " if name else ""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DicomRejected(
            "mask_unreadable",
            f"{who}cannot read contour file {path} ({exc}); fix the mask column",
        ) from exc
    points = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 2:
                raise ValueError
            x, y = float(fields[0]), float(fields[1])
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError
        except ValueError:
            raise DicomRejected(
                "mask_unreadable",
                f"{who}contour file {path} line {line_no}: {line.strip()[:60]!r} is not "
                "'x y' (two finite numbers in pixels); fix or remove the line",
            ) from None
        points.append((x, y))
        if len(points) > MAX_VERTICES:
            raise DicomRejected(
                "mask_unreadable",
                f"{who}contour file {path} has more than {MAX_VERTICES} vertices; "
                "is it a contour file?",
            )
    if len(points) < 3:
        raise DicomRejected(
            "mask_unreadable",
            f"{who}contour file {path} has {len(points)} vertices; a polygon needs at least 3",
        )
    return np.asarray(points, dtype=np.float64)


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of a closed polygon ``[n, 2]`` (absolute value, in pixels²)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def rasterize_polygon(points: np.ndarray, rows: int, cols: int, origin: float = 0.0) -> np.ndarray:
    """Fill a polygon on a ``rows x cols`` grid: uint8 mask, 1 where the pixel centre is inside.

    Args:
        points: ``[n, 2]`` (x, y) vertices; x runs along columns, y along rows.
        rows, cols: the grid.
        origin: the coordinate of the first pixel's centre (0: 0-based centres, 1: 1-based).
    """
    xs = np.asarray(points[:, 0], dtype=np.float64) - origin
    ys = np.asarray(points[:, 1], dtype=np.float64) - origin
    x0, y0, x1, y1 = xs, ys, np.roll(xs, -1), np.roll(ys, -1)
    mask = np.zeros((rows, cols), dtype=np.uint8)
    first, last = max(0, math.ceil(ys.min())), min(rows - 1, math.floor(ys.max()))
    for r in range(first, last + 1):
        # Half-open in y: an edge counts at row r when r is in [min y, max y) of the edge.
        crossing = ((y0 <= r) & (y1 > r)) | ((y1 <= r) & (y0 > r))
        if not crossing.any():
            continue
        a0, b0, a1, b1 = x0[crossing], y0[crossing], x1[crossing], y1[crossing]
        xc = np.sort(a0 + (r - b0) * (a1 - a0) / (b1 - b0))
        for left, right in zip(xc[0::2], xc[1::2], strict=True):
            # Half-open in x: centres c with left <= c < right.
            c0, c1 = max(0, math.ceil(left)), min(cols, math.ceil(right))
            if c1 > c0:
                mask[r, c0:c1] = 1
    return mask


def contour_mask(
    path: str | Path, rows: int, cols: int, name: str = "", origin: float = CONTOUR_ORIGIN
) -> np.ndarray:
    """The contour file filled on the instance's ``rows x cols`` grid (uint8 0/1).

    Raises:
        DicomRejected: ``mask_unreadable`` (see :func:`read_contour`); ``mask_mismatch``
            when a vertex lies outside the image (the contour belongs to another image).
    """
    points = read_contour(path, name)
    xs, ys = points[:, 0] - origin, points[:, 1] - origin
    outside = (xs < -1) | (xs > cols) | (ys < -1) | (ys > rows)
    if outside.any():
        i = int(np.argmax(outside))
        raise DicomRejected(
            "mask_mismatch",
            f"{name + ': ' if name else ''}contour file {path}: vertex {i + 1} "
            f"({points[i, 0]:g}, {points[i, 1]:g}) lies outside the {rows}x{cols} image; "
            "the contour belongs to another image",
        )
    return rasterize_polygon(points, rows, cols, origin)
