"""The case images a Streamlit page shows inline (data URIs in markdown), decoded: what the
browser receives, for AppTest checks."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

_DATA_URI = re.compile(r'<img class="medflow-case-image"[^>]*src="data:image/png;base64,([^"]+)"')


def page_images(at) -> list[np.ndarray]:
    """RGB pixels (int16, for differences) of each inline case image on the page."""
    out = []
    for element in at.markdown:
        for data in _DATA_URI.findall(element.value):
            image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
            out.append(np.asarray(image).astype(np.int16))
    return out
