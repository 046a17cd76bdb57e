"""Models page: pushed versions, their contract, blessing and TFMA results.

The version listing is cached on :func:`dashboard.pushed_models.listing_key` (folder names
and contract mtimes), so a new push shows on the next rerun; TFMA results are cached by
evaluation URI (artifacts do not change once written).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from medflow.core.errors import MedflowError
from medflow.core.trust import trust_lines
from medflow.dashboard import lineage, pushed_models
from medflow.dashboard.config import Settings
from medflow.dashboard.records import User
from medflow.dashboard.store import ReviewStore
from medflow.dashboard.views.runs import REMOTE_TTL_S, sqlite_stamp

CONTRACT_FIELDS = ("task", "labels", "intended_use", "created_by", "model_sha256")


@st.cache_data(show_spinner=False, max_entries=8)
def list_versions(models_dir: str, key: tuple) -> list[pushed_models.ModelVersion]:
    return pushed_models.list_versions(models_dir)


@st.cache_data(show_spinner=False, max_entries=64)
def _lineage(path: str, stamp: tuple, destination: str, version: str):
    store = lineage.open_store(lineage.sqlite_config(path))
    return lineage.push_lineage(store, destination, version)


@st.cache_data(show_spinner="Loading TFMA results (first time takes a while)…", max_entries=16)
def _evaluation(uri: str) -> pushed_models.Evaluation:
    return pushed_models.load_evaluation(uri)


@st.cache_data(show_spinner=False, max_entries=16)
def _lineage_remote(config_path: str, time_bucket: int, destination: str, version: str):
    store = lineage.open_store(lineage.config_from_file(config_path))
    return lineage.push_lineage(store, destination, version)


def find_lineage(settings: Settings, version: pushed_models.ModelVersion):
    """The push recorded in ML Metadata for this version, if any."""
    if settings.mlmd_config:
        bucket = int(time.time() // REMOTE_TTL_S)
        return _lineage_remote(settings.mlmd_config, bucket, version.path, str(version.version))
    for path in settings.mlmd_sqlite_files().values():
        found = _lineage(str(path), sqlite_stamp(path), version.path, str(version.version))
        if found is not None:
            return found
    return None


def show(settings: Settings, store: ReviewStore, user: User) -> None:
    """Renders the Models page."""
    st.title("Models")
    base = settings.models_path
    versions = list_versions(str(base), pushed_models.listing_key(base))
    if not versions:
        st.info(
            f"No model has been pushed yet: no version folder under {base}. The pipeline's "
            "Pusher publishes blessed models there (`make run`)."
        )
        return
    names = sorted({v.name for v in versions})
    name = st.selectbox("Model", names, key="models_name")
    mine = [v for v in versions if v.name == name]
    st.dataframe(
        pd.DataFrame(
            {
                "version": [v.version for v in mine],
                **{m: [v.overall_metrics.get(m) for v in mine] for m in _metric_names(mine)},
                "problem": [v.problem for v in mine],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    by_version = {v.version: v for v in mine}
    version = by_version[st.selectbox("Version", list(by_version), key="models_version")]
    _version_detail(settings, version)


def _metric_names(versions: list[pushed_models.ModelVersion]) -> list[str]:
    return sorted({m for v in versions for m in v.overall_metrics})


def _version_detail(settings: Settings, version: pushed_models.ModelVersion) -> None:
    st.subheader(f"{version.name} v{version.version}")
    st.caption(version.path)
    if version.problem:
        st.warning(version.problem)
    contract = version.contract or {}
    if contract:
        st.markdown(
            "  \n".join(
                f"**{k.replace('_', ' ')}** {contract[k]}" for k in CONTRACT_FIELDS if k in contract
            )
        )
        if version.overall_metrics:
            st.markdown("**Evaluation metrics (overall, from the contract)**")
            _tiles(version.overall_metrics)
        trust = trust_lines(
            contract.get("calibration"),
            contract.get("operating_point"),
            (contract.get("metrics") or {}).get("eval_intervals"),
        )
        if trust:
            st.markdown("**Operating point, calibration, intervals**  \n" + "  \n".join(trust))
        init = (contract.get("training_data") or {}).get("init")
        if init:
            st.markdown(init_text(init))
        with st.expander("Contract (contract.json)"):
            st.json(contract)
    try:
        pushed = find_lineage(settings, version)
    except MedflowError as exc:
        st.warning(f"ML Metadata not readable, so no blessing/lineage shown: {exc}")
        pushed = None
    _blessing(pushed)
    uri = pushed_models.contract_evaluation_uri(contract) or (pushed and pushed.evaluation_uri)
    _tfma(uri)


def init_text(init: dict) -> str:
    """The contract's ``training_data.init``: which pushed model's encoder initialised it."""
    name = init.get("model_name")
    model = f"{name} v{init.get('version', '?')}" if name else "a Trainer's model"
    task = f" ({init['task']})" if init.get("task") else ""
    sha = f", encoder SHA-256 {init['encoder_sha256'][:12]}" if init.get("encoder_sha256") else ""
    return f"**Backbone initialised from** {model}{task} at `{init.get('path', '?')}`{sha}"


TILES_PER_ROW = 4  # wide enough for a full metric name and value at 1400 px


def metric_text(value: float) -> str:
    """A metric value as a tile shows it: counts as integers, the rest to 3 decimals."""
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.3f}"


def _tiles(metrics: dict[str, float]) -> None:
    """One tile per metric, at most :data:`TILES_PER_ROW` in a row (not one row of slivers
    that cut every value to "0.…")."""
    items = sorted(metrics.items())
    for start in range(0, len(items), TILES_PER_ROW):
        cols = st.columns(TILES_PER_ROW)
        for col, (metric, value) in zip(cols, items[start : start + TILES_PER_ROW], strict=False):
            col.metric(metric.replace("_", " "), metric_text(value))


def informative_slices(sliced: pd.DataFrame, metric: str) -> tuple[pd.Series | None, str]:
    """The slices worth a chart of ``metric``, or None and why there is no chart.

    A slicing feature with one value only (e.g. every image ``sex=UNKNOWN``) compares
    nothing, so its slice is left out; bars that are all equal say nothing either.
    """

    def feature(name: str) -> str:
        return ",".join(part.split("=", 1)[0] for part in str(name).split(","))

    features = pd.Series([feature(n) for n in sliced.index], index=sliced.index)
    keep = features.map(features.value_counts()) >= 2
    values = sliced.loc[keep, metric].dropna() if metric in sliced else pd.Series(dtype=float)
    if values.empty:
        return None, (
            "No slicing feature has more than one value in this evaluation "
            f"({', '.join(map(str, sliced.index))}): nothing to compare per slice."
        )
    if values.nunique() <= 1:
        return None, f"Every slice has the same {metric} ({metric_text(values.iloc[0])})."
    return values, ""


def _blessing(pushed: lineage.PushLineage | None) -> None:
    st.markdown("**Blessing**")
    if pushed is None:
        st.info("No push of this version is recorded in ML Metadata (blessing unknown).")
        return
    b = pushed.blessing
    baseline = b.get("baseline_model") or ""
    against = (
        f"compared with baseline {baseline} (artifact {b.get('baseline_model_id')})"
        if baseline
        else "no baseline model (first blessed model: absolute thresholds only)"
    )
    verdict = "Blessed" if pushed.blessed else "NOT blessed"
    say = st.success if pushed.blessed else st.error
    say(f"{verdict} by the Evaluator in run {pushed.run_id}; {against}.")


def _tfma(uri: str | None) -> None:
    st.markdown("**TFMA results**")
    if not uri:
        st.info("No evaluation recorded for this version.")
        return
    if not any(Path(uri).glob("metrics*")):
        st.info(f"No TFMA results at {uri}.")
        return
    try:
        evaluation = _evaluation(uri)
    except Exception as exc:  # noqa: BLE001 - shown; the rest of the page stays usable
        st.error(f"Cannot read TFMA results at {uri}: {exc}")
        return
    metrics = pd.DataFrame(evaluation.metrics).T.sort_index()
    sliced = metrics.drop(index="overall", errors="ignore")
    if not sliced.empty:
        names = list(sliced.columns)
        default = names.index("auc") if "auc" in names else 0
        metric = st.selectbox("Metric per slice", names, index=default, key="models_metric")
        values, why = informative_slices(sliced, metric)
        if values is None:
            st.caption(why)
        else:
            st.bar_chart(values, horizontal=True, height=60 + 28 * len(values))
    with st.expander("All metrics per slice"):
        st.dataframe(metrics, width="stretch")
    cols = st.columns(2)
    if "overall" in evaluation.roc:
        roc = pd.DataFrame(evaluation.roc["overall"], columns=["false positive rate", "TPR"])
        cols[0].markdown("ROC curve (overall)")
        cols[0].line_chart(roc, x="false positive rate", y="TPR", height=300)
    if evaluation.calibration.get("overall"):
        cal = pd.DataFrame(evaluation.calibration["overall"])
        cal["perfect"] = cal["mean_prediction"]
        cols[1].markdown("Calibration (overall)")
        cols[1].line_chart(cal, x="mean_prediction", y=["observed_rate", "perfect"], height=300)
