"""A model contract's ``expected_input``: what the training images were (header values and
the model-input pixel spacing range), and how one input differs from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The header features ingestion stores (medflow.core.features) that an input is checked on.
EXPECTED_HEADER_KEYS = ("modality", "photometric", "body_part")
SPACING_KEY = "pixel_spacing_mm"
# Spacing within this factor of the training range passes (rounding, a few px of resizing).
SPACING_TOLERANCE = 1.05


def input_mismatches(expected: Mapping[str, Any], observed: Mapping[str, Any]) -> list[str]:
    """How one input differs from what the model was trained on (empty: it fits).

    Args:
        expected: a contract's ``expected_input``.
        observed: the input's ``modality``, ``photometric``, ``body_part`` (strings; empty
            or ``UNKNOWN`` when the header has none) and ``pixel_spacing_mm`` (the model
            input's (row, col) mm, or None).

    Returns:
        Phrases like ``modality MR (trained on DX)``.
    """
    out = []
    for key in EXPECTED_HEADER_KEYS:
        allowed = [str(v).upper() for v in expected.get(key) or ()]
        value = str(observed.get(key) or "").strip().upper()
        if allowed and value not in allowed:
            shown = value if value and value != "UNKNOWN" else "none"
            out.append(f"{key.replace('_', ' ')} {shown} (trained on {', '.join(allowed)})")
    low_high = expected.get(SPACING_KEY)
    spacing = observed.get(SPACING_KEY)
    if low_high and spacing:
        low, high = low_high
        if min(spacing) < low / SPACING_TOLERANCE or max(spacing) > high * SPACING_TOLERANCE:
            got = "x".join(f"{s:.3g}" for s in spacing)
            out.append(f"pixel spacing {got} mm (trained on {low:.3g}-{high:.3g} mm)")
    return out
