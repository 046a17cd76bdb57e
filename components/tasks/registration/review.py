"""Reviewing registrations: the case is the fixed image, and the review page shows the
warped moving image (``mask_ref``: a PNG on the fixed image's grid written by ``medflow
predict --pairs --record``) against it as a checkerboard, a blend or alone. The reviewer
accepts the registration (it is right) or rejects it; both are audited by the review store.
The labels export lists accepted registrations (the warped image's file). Streamlit is
imported inside the rendering functions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medflow.core.errors import InputError
from medflow.core.tasks import ReviewAction, TaskReview

VIEWS = ("checkerboard", "blend", "warped only")
TILE = 32  # display pixels per checkerboard square


def checkerboard(fixed: np.ndarray, warped: np.ndarray, tile: int = TILE) -> np.ndarray:
    """Alternating squares of the fixed image (display RGB or grey uint8) and the warped
    image (grey uint8, same rows x cols): edges that continue across squares are aligned."""
    fixed_rgb = _rgb(fixed)
    warped_rgb = _rgb(warped)
    rows, cols = warped.shape[:2]
    yy, xx = np.meshgrid(np.arange(rows) // tile, np.arange(cols) // tile, indexing="ij")
    pick = ((yy + xx) % 2 == 1)[..., None]
    return np.where(pick, warped_rgb, fixed_rgb).astype(np.uint8)


def blend(fixed: np.ndarray, warped: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Fixed in magenta, warped in green (aligned structures turn grey)."""
    f, w = _grey(fixed), _grey(warped)
    out = np.stack([f, alpha * w + (1 - alpha) * f, f], axis=-1)
    return np.clip(out, 0, 255).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float32)
    return image.mean(axis=-1) if image.ndim == 3 else image


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)


def load_warped(ref: str, shape: tuple[int, int]) -> np.ndarray:
    """The warped image PNG as grey uint8.

    Raises:
        InputError: the file is missing, unreadable or not on the displayed grid.
    """
    from PIL import Image

    try:
        with Image.open(ref) as im:
            warped = np.asarray(im.convert("L"))
    except OSError as exc:
        raise InputError(f"cannot show the warped image {ref}: {exc}") from exc
    if warped.shape != tuple(shape):
        raise InputError(
            f"warped image {ref} is {warped.shape[0]}x{warped.shape[1]} but the fixed image "
            f"is {shape[0]}x{shape[1]}; predict the pair again"
        )
    return warped


class RegistrationReview(TaskReview):
    """The registration review plug-in (see :class:`medflow.core.tasks.TaskReview`)."""

    actions = (
        ReviewAction("accept", "Accept registration", "A"),
        ReviewAction("reject", "Reject registration", "X"),
    )
    export_kind = "registrations"
    export_columns = ("warped",)

    def label_index(self, pred, action: str, label: int | str | None) -> int | None:
        if self.action(action) is None:
            raise InputError(
                f"case {pred.id} is a registration: accept or reject it, not {action!r}"
            )
        return 0 if action == "accept" else None

    def outcome(self, pred, action: str, label_index: int | None, digest: str | None) -> str:
        what = "accepted" if action == "accept" else "rejected"
        return f"{what} registration (warped image {pred.mask_ref}; {self.queue_label(pred)})"

    def queue_label(self, pred) -> str:
        score = pred.scores[0] if pred.scores else None
        return "registration" if score is None else f"registration, score {score:.3f}"

    def overlay_blend(self, pred, shape: tuple[int, int], on_frame: bool):
        import streamlit as st

        if not pred.mask_ref:
            return None, "no warped image was recorded with this case"
        try:
            warped = load_warped(pred.mask_ref, shape)
        except InputError as exc:
            st.error(str(exc))
            return None, str(exc)
        view = st.radio("Registration view", VIEWS, horizontal=True, key="review_reg_view")
        if view == "checkerboard":
            return (lambda pixels: checkerboard(pixels, warped)), None
        if view == "blend":
            return (lambda pixels: blend(pixels, warped)), None
        return (lambda pixels: _rgb(warped)), None

    def render_details(self, pred) -> None:
        import streamlit as st

        st.markdown(f"**Registration** {self.queue_label(pred)} (Dice after, when masks given)")
        if pred.mask_ref:
            st.caption(f"Warped image `{Path(pred.mask_ref).name}`")
        st.caption(
            "Checkerboard: squares alternate fixed and warped moving image; edges that run on "
            "across squares are aligned. Accept: the registration is right. Reject: it is not."
        )

    def blocked(self, action: ReviewAction, problem: str | None) -> str | None:
        if action.name == "accept" and problem:
            return f"Accept needs the warped image on screen: {problem}"
        return None

    def manifest_cells(self, item) -> dict[str, str]:
        ref = item.mask_ref or ""
        if ref and not os.path.isfile(ref):
            raise InputError(f"warped image {ref} of case {item.prediction_id} is missing")
        return {"warped": str(Path(ref).resolve()) if ref else ""}


REVIEW = RegistrationReview()
