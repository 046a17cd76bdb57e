"""The Volumes page: scroll through a predicted volume mask slice by slice (axial, coronal,
sagittal), set window/level, show each label's overlay, accept or reject the mask, and
export the accepted pairs for the next run (:mod:`medflow.dashboard.volume_review`).

The folder is ``MEDFLOW_VOLUME_DIR``, else ``<workdir>/volume_review``.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from medflow.core.errors import InputError
from medflow.dashboard import volume_review as vr

ENV_VOLUME_DIR = "MEDFLOW_VOLUME_DIR"


def volume_dir(settings) -> Path:
    return Path(os.environ.get(ENV_VOLUME_DIR) or Path(settings.workdir) / "volume_review")


def show(settings, store, user) -> None:
    folder = volume_dir(settings)
    st.header("Volumes")
    names = vr.list_cases(folder)
    if not names:
        st.info(
            f"No volumes to review in {folder}: put source volumes in images/ and "
            "`medflow predict --nifti-out` label maps of the same names in masks/."
        )
        return
    decisions = vr.read_decisions(folder)

    def caption(name: str) -> str:
        return f"{name} ({decisions[name]['decision']}ed)" if name in decisions else name

    name = st.selectbox("Volume", names, format_func=caption, key="vol_case")
    try:
        case = vr.load_case(folder, name)
    except InputError as exc:
        st.error(str(exc))
        return
    left, right = st.columns([3, 1])
    with right:
        plane = st.radio("Plane", vr.PLANES, horizontal=True, key="vol_plane")
        n = case.slices(plane)
        index = st.slider("Slice", 0, n - 1, n // 2, key=f"vol_slice_{name}_{plane}")
        center0, width0 = vr.default_window(case.image)
        top = float(case.image.max()) or 1.0
        center = st.slider("Level", float(case.image.min()), top, center0, key=f"vol_c_{name}")
        width = st.slider("Window", 1e-3 * top, 2 * top, width0, key=f"vol_w_{name}")
        shown = [
            label
            for label in case.labels
            if st.checkbox(f"label {label}", value=True, key=f"vol_label_{name}_{label}")
        ]
    with left:
        st.image(
            vr.render(case, plane, index, (center, width), shown),
            caption=f"{name}: {plane} slice {index + 1} of {n}",
            width=512,
        )
    _decide(folder, case, decisions.get(name), user.username, right)
    _export(folder)


def _decide(folder: Path, case, decided, reviewer: str, column) -> None:
    with column:
        if decided:
            st.caption(f"{decided['decision']}ed by {decided['reviewer']} at {decided['time']}")
        accept, reject = st.columns(2)
        if accept.button("Accept mask", type="primary", key="vol_accept"):
            vr.decide(folder, case, "accept", reviewer)
            st.rerun()
        if reject.button("Reject mask", key="vol_reject"):
            vr.decide(folder, case, "reject", reviewer)
            st.rerun()


def _export(folder: Path) -> None:
    with st.expander("Export accepted masks for the next run"):
        out = st.text_input("Export folder", str(folder / "accepted"), key="vol_export_dir")
        if st.button("Export", key="vol_export"):
            try:
                names = vr.export_accepted(folder, out)
            except InputError as exc:
                st.error(str(exc))
                return
            st.success(
                f"exported {len(names)} volumes to {out}; next: medflow import-nifti "
                f"{out}/images --masks {out}/masks --out NEXT, then medflow run NEXT "
                "--labels NEXT/labels.csv with the model's --task and --class-names"
            )
