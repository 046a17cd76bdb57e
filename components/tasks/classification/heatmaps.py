"""Grad-CAM heat maps of classification predictions as files.

``medflow predict --overlay-out DIR`` writes per prediction ``<SOPInstanceUID>_f<frame>.png``
(the source frame as the review page first shows it, the heat map blended over it in the
"jet" colour map) and ``<SOPInstanceUID>_f<frame>.heatmap.npy`` (float32 [rows, cols] in
[0, 1] on the source image's grid). ``--record`` saves the ``.npy`` under the review folder
and sets ``heatmap_ref``, which the review page's heatmap overlay reads.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medflow.core.files import atomic_write
from medflow.core.tasks import OutputOptions, OutputReport

OPACITY = 0.5


def _stem(pred) -> str:
    uid = re.sub(r"[^0-9A-Za-z.]", "_", pred.sop_instance_uid or Path(pred.path).stem)
    return f"{uid}_f{pred.frame_index}"


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, np.float32))
    return buf.getvalue()


def overlay_png(pred) -> bytes:
    """The PNG of the heat map blended over the source frame (review page's colours)."""
    from PIL import Image

    from medflow.components.dicom.display import blend, load_study, render

    study = load_study(pred.path)
    center, width = study.preset_window(study.presets()[0])
    frame = render(study, pred.frame_index, center, width)
    buf = io.BytesIO()
    Image.fromarray(blend(frame, pred.heatmap, OPACITY)).save(buf, format="PNG")
    return buf.getvalue()


def write_heatmaps(results: Sequence, out_dir: str | Path) -> list[str]:
    """The PNG overlay and ``.npy`` of each result (atomic writes); returns the PNG paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for pred in results:
        png = out_dir / f"{_stem(pred)}.png"
        atomic_write(png, overlay_png(pred))
        atomic_write(out_dir / f"{_stem(pred)}.heatmap.npy", _npy(pred.heatmap))
        paths.append(str(png))
    return paths


def save_for_review(results: Sequence, out_dir: str | Path) -> list:
    """Each heat map as ``<stem>_<model>-<version>.heatmap.npy``; returns the results with
    ``heatmap_ref`` set to its absolute path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for pred in results:
        model = re.sub(r"[^0-9A-Za-z.-]", "_", f"{pred.model_name}-{pred.model_version}")
        target = (out_dir / f"{_stem(pred)}_{model}.heatmap.npy").resolve()
        atomic_write(target, _npy(pred.heatmap))
        saved.append(dataclasses.replace(pred, heatmap_ref=str(target)))
    return saved


def write_files(results: list, options: OutputOptions) -> tuple[list, OutputReport]:
    """``--overlay-out`` files and ``--record`` heat maps of results that carry one."""
    report = OutputReport()
    out_dir = options.files.get("overlay_out")
    with_map = [r for r in results if r.heatmap is not None]
    if out_dir:
        if len(with_map) < len(results):
            report.problems.append(
                f"--overlay-out {out_dir}: the model {results[0].model_name} has no 'explain' "
                "signature (no Grad-CAM heat map); export it again with this medflow"
            )
        pngs = write_heatmaps(with_map, out_dir)
        report.lines.append(
            f"wrote {len(pngs)} Grad-CAM overlay(s) (.png, .heatmap.npy) to {out_dir}"
        )
    if options.review_dir and with_map:
        saved = iter(save_for_review(with_map, options.review_dir))
        results = [next(saved) if r.heatmap is not None else r for r in results]
    return results, report
