"""The case images a Streamlit page shows, decoded: what the browser receives, for AppTest
checks. The review page's viewer (an ``st.iframe``) carries the frame and its overlay layer
as JSON; :func:`medflow.dashboard.views.viewer.decode_payload` gives the picture it first
shows (default window, overlay on)."""

from __future__ import annotations

import json
import re

import numpy as np

from medflow.dashboard.views.viewer import decode_payload

_PAYLOAD = re.compile(
    r'<script type="application/json" id="medflow-viewer-data">(.*?)</script>', re.S
)


def viewer_payloads(at) -> list[dict]:
    """The data of each image viewer on the page."""
    out = []
    for element in at.get("iframe"):
        for text in _PAYLOAD.findall(element.proto.srcdoc):
            out.append(json.loads(text.replace("<\\/", "</")))
    return out


def page_images(at) -> list[np.ndarray]:
    """RGB pixels (int16, for differences) of each case image on the page."""
    return [decode_payload(p).astype(np.int16) for p in viewer_payloads(at)]
