"""The review page's image viewer: one frame, its overlay layer, and the tools radiologists
expect, running in the browser (``viewer.html`` in an ``st.iframe``).

The frame travels as its own values (16-bit, mapped back to Modality-LUT units in the
browser), so window/level by mouse drag or arrow keys, presets, invert, wheel zoom, pan,
a distance line and an elliptical area (in mm when the pixel spacing is known) and full
screen all work without a rerun. The overlay (mask, heatmap) is one RGBA layer on top.
The image lives only in the page (no /media/ URL; issue 23). Keys the viewer does not use
(the page's review shortcuts) are passed on to the page.

:func:`overlay_layer` turns a task's linear overlay blend into that RGBA layer.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from medflow.components.dicom import display

_TEMPLATE = Path(__file__).with_name("viewer.html")
# Keys of the page's shortcuts that the viewer passes on to the page (Streamlit's).
FORWARDED_KEYS = ("a", "x", "l", "s", "n", "p")


def png_data_uri(pixels: np.ndarray) -> str:
    """A PNG data URI of uint8 grey, RGB or RGBA pixels."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def overlay_layer(blend: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The RGBA layer that a linear blend ``out = image * (1 - a) + colour * a`` puts on an
    image of ``shape``, found by blending over black and over white."""
    black = blend(np.zeros(shape, np.uint8)).astype(np.float32)
    white = blend(np.full(shape, 255, np.uint8)).astype(np.float32)
    alpha = np.clip(1.0 - (white - black).mean(axis=2) / 255.0, 0.0, 1.0)
    color = black / np.maximum(alpha, 1e-3)[..., None]
    rgba = np.zeros((*shape, 4), np.uint8)
    rgba[..., :3] = np.clip(color + 0.5, 0, 255)
    rgba[..., 3] = np.where(alpha < 1.5 / 255, 0, alpha * 255 + 0.5)
    return rgba


def payload(
    study: display.Study,
    frame: int,
    *,
    key: str,
    layer: np.ndarray | None,
    spacing: tuple[float, float] | None,
    caption: str,
) -> dict:
    """What the viewer receives for one frame (see ``viewer.html``)."""
    data: dict = {
        "key": key,
        "rows": int(study.frames.shape[1]),
        "cols": int(study.frames.shape[2]),
        "layer": None if layer is None else png_data_uri(layer),
        "spacing": list(spacing) if spacing else None,
        "caption": caption,
        "forward": list(FORWARDED_KEYS),
        "presets": [],
        "grey": None,
        "rgb": None,
    }
    if study.is_color:
        return {**data, "rgb": png_data_uri(study.frames[frame]), "invert": False}
    values = study.frames[frame].astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    scale = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.round((values - lo) / scale).astype("<u2")
    presets = [[name, *map(float, study.preset_window(name))] for name in study.presets()]
    span = max(float(np.ptp(study.frames)), 1.0)
    return {
        **data,
        "grey": base64.b64encode(stored.tobytes()).decode("ascii"),
        "lo": lo,
        "scale": scale,
        "span": span,
        "center": presets[0][1],
        "width": presets[0][2],
        "presets": presets,
        "invert": study.photometric == "MONOCHROME1",
    }


def decode_payload(data: dict) -> np.ndarray:
    """The RGB pixels the viewer first shows (its default window, the overlay on): what the
    browser receives, for tests and checks."""
    rows, cols = data["rows"], data["cols"]
    if data["grey"] is not None:
        stored = np.frombuffer(base64.b64decode(data["grey"]), "<u2").reshape(rows, cols)
        values = data["lo"] + stored * data["scale"]
        lo = data["center"] - data["width"] / 2
        grey = np.clip((values - lo) * 255 / max(data["width"], 1e-6), 0, 255)
        grey = 255 - grey if data["invert"] else grey
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        rgb = _from_uri(data["rgb"])[..., :3].astype(np.float64)
    if data["layer"]:
        layer = _from_uri(data["layer"]).astype(np.float64)
        alpha = layer[..., 3:] / 255.0
        rgb = rgb * (1 - alpha) + layer[..., :3] * alpha
    return np.floor(rgb + 0.5).astype(np.uint8)


def _from_uri(uri: str) -> np.ndarray:
    raw = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGBA"))


def show(data: dict, height: int = 720) -> None:
    """Puts the viewer in the page; it grows to the window's height below its top."""
    text = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    st.iframe(_TEMPLATE.read_text(encoding="utf-8").replace("__DATA__", text), height=height)
