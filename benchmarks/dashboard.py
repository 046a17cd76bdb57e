"""Dashboard: time to first render of the review page with 1,000 predictions in the store, warm.

A signed-in session opens the review page (queue query, queue table, case list, DICOM
viewer, case panel, the view's audit record) through ``streamlit.testing.v1.AppTest``, i.e.
the script run the server does for a browser, without the browser's own painting. "Warm":
the process has imported everything and rendered once, as a running server has. Baseline in
the same run: the same page on an empty queue. Target: <= 1 s with 1,000 predictions.

Then the same 1,000 predictions plus one segmentation case opened directly (``?case=``): an
HC18 ultrasound image (800x540) with its reference mask (pydicom's CT_small.dcm with a
threshold mask when the shared data is absent), drawn filled and as a contour.

Run: ``.venv/bin/python benchmarks/dashboard.py [--predictions 1000] [--repeats 7]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
APP = str(REPO / "dashboard" / "app.py")
TARGET_S = 1.0
# A server scans installed packages for custom components once, at startup; AppTest does it
# in each new instance's first run (~1.5 s here). Sharing the warm-up's registry keeps that
# one-off cost out of a session's first render, as on a running server.
_components: list = []


def _store(folder: Path, n: int, *, mask: bool = False) -> tuple[str, int | None]:
    """The store's URL, and the id of its segmentation case (with ``mask``)."""
    from medflow.commands.demo import default_data_dir
    from medflow.dashboard.store import ReviewStore
    from medflow.workflows.review_samples import seed_masks, seed_store

    url = f"sqlite:///{folder}/review.db"
    store = ReviewStore(url)
    if n:
        seed_store(store, folder / "images", n)
    case = None
    if mask:
        hc18 = default_data_dir() / "hc18"
        ids = seed_masks(store, folder / "seg", hc18_dir=hc18 if hc18.is_dir() else None, n=1)
        case = ids[0]
        pred = store.get_prediction(case)
        print(f"segmentation case: {pred.image_ref} with mask {pred.mask_ref}")
    store.close()
    return url, case


def _first_render(url: str, case: int | None = None, view: str | None = None) -> float:
    """Seconds for a fresh signed-in session's first run of the review page."""
    from streamlit.testing.v1 import AppTest

    from medflow.dashboard.auth import SESSION_KEY
    from medflow.dashboard.records import User

    os.environ["MEDFLOW_STORE_URL"] = url
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[SESSION_KEY] = User("bench", "reviewer")
    at.query_params["page"] = "review"
    if case is not None:
        at.query_params["case"] = str(case)
    if view is not None:
        at.session_state["review_mask_view"] = view
    if _components:
        at._bidi_component_manager = _components[0]
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if not _components:
        _components.append(at._bidi_component_manager)
    if at.exception:
        raise SystemExit(f"the review page raised: {at.exception[0].message}")
    assert [t.value for t in at.title] == ["Review queue"], "not the review page"
    if case is not None:
        assert at.selectbox(key="review_case").value == case, "not the segmentation case"
        assert at.radio(key="review_mask_view").value == (view or "fill")
        assert not at.error, [e.value for e in at.error]
    return elapsed


def _timed(configs: dict[str, tuple], repeats: int) -> dict[str, list[float]]:
    """Times each configuration ``(url, case, view)`` ``repeats`` times, interleaved so that
    load changes on a shared machine hit all of them alike."""
    for args in configs.values():
        _first_render(*args)  # warm-up: imports, cached store, DICOM and mask reads
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(repeats):
        for name, args in configs.items():
            times[name].append(_first_render(*args))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        full, case = _store(tmp / "full", args.predictions, mask=True)
        seeded = time.perf_counter() - start
        empty, _ = _store(tmp / "empty", 0)
        os.environ["MEDFLOW_WORKDIR"] = str(tmp / "workdir")
        times = _timed(
            {
                "empty": (empty, None, None),
                "full": (full, None, None),
                "fill": (full, case, "fill"),
                "contour": (full, case, "contour"),
            },
            args.repeats,
        )
    base, loaded = times.pop("empty"), times.pop("full")
    masked = times
    b, m = statistics.median(base), statistics.median(loaded)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"dashboard review page, first render of a new signed-in session, warm (AppTest, "
          f"median of {args.repeats}, interleaved; {os.cpu_count()} CPUs, load average "
          f"{load:.1f})")  # fmt: skip
    print(
        f"  empty queue (baseline)        {b:7.3f} s   (min {min(base):.3f}, max {max(base):.3f})"
    )
    print(f"  {args.predictions:,} predictions            {m:7.3f} s   "
          f"(min {min(loaded):.3f}, max {max(loaded):.3f})")  # fmt: skip
    print(f"  ratio {m / b:.2f}x baseline; target <= {TARGET_S:.1f} s: "
          f"{'met' if m <= TARGET_S else 'MISSED'}  (store seeded in {seeded:.1f} s)")  # fmt: skip
    for view, times in masked.items():
        t = statistics.median(times)
        print(f"  + segmentation case, {view:<8}{t:7.3f} s   (min {min(times):.3f}, "
              f"max {max(times):.3f}); {t / b:.2f}x baseline, {t / m:.2f}x the "
              f"1,000-prediction page; target {'met' if t <= TARGET_S else 'MISSED'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
