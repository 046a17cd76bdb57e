"""Models page with real TFMA results (tfma.analyze_raw_data output): ROC, calibration, slices.

Slow: importing TensorFlow Model Analysis and running its Beam pipeline takes ~30 s here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from medflow.dashboard import lineage, pushed_models
from medflow.dashboard.store import ReviewStore
from tests.support.sample_runs import PIPELINE, write_pushed_version, write_sample_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
PASSWORD = "review-pass-1"


def _write_tfma_result(uri: str) -> None:
    import pandas as pd
    import tensorflow_model_analysis as tfma

    rng = np.random.default_rng(0)
    n = 400
    label = rng.integers(0, 2, n)
    modality = rng.choice(["CR", "DX"], n)
    # DX predictions are noisier than CR ones, so the slices differ.
    noise = np.where(modality == "CR", 0.25, 0.6)
    pred = np.clip(0.5 + (label - 0.5) * 0.6 + rng.normal(0, 1, n) * noise, 0, 1)
    frame = pd.DataFrame({"label": label.astype(float), "prediction": pred, "modality": modality})
    config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(label_key="label", prediction_key="prediction")],
        metrics_specs=tfma.metrics.specs_from_metrics(
            [
                tfma.metrics.AUC(),
                tfma.metrics.BinaryAccuracy(),
                tfma.metrics.ConfusionMatrixPlot(),
                tfma.metrics.CalibrationPlot(),
            ]
        ),
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=["modality"])],
    )
    tfma.analyze_raw_data(frame, config, output_path=uri)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfma") / "workdir"
    dest = write_pushed_version(root / "models", 9)
    db = root / "metadata" / f"{PIPELINE}.sqlite"
    write_sample_run(db, root / "pipelines", pushed_destination=dest, pushed_version=9)
    store = lineage.open_store(lineage.sqlite_config(db))
    uri = lineage.push_lineage(store, str(dest), "9").evaluation_uri
    _write_tfma_result(uri)
    return root, uri


def test_load_evaluation_metrics_roc_and_calibration(evaluated):
    _, uri = evaluated
    ev = pushed_models.load_evaluation(uri)
    assert set(ev.metrics) == {"overall", "modality=CR", "modality=DX"}
    assert ev.metrics["modality=CR"]["auc"] > ev.metrics["modality=DX"]["auc"]
    roc = ev.roc["overall"]
    assert roc[0] == (0.0, 0.0) and roc[-1] == (1.0, 1.0) and len(roc) > 20
    # The area under the plotted ROC points matches TFMA's own AUC.
    fpr, tpr = np.array(roc).T
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(ev.metrics["overall"]["auc"], abs=0.02)
    cal = ev.calibration["overall"]
    assert sum(p["examples"] for p in cal) == pytest.approx(400)
    assert all(0 <= p["mean_prediction"] <= 1 and 0 <= p["observed_rate"] <= 1 for p in cal)


def test_models_page_charts_tfma_results(evaluated, tmp_path, monkeypatch):
    root, _ = evaluated
    url = f"sqlite:///{tmp_path}/review.db"
    monkeypatch.setenv("MEDFLOW_STORE_URL", url)
    monkeypatch.setenv("MEDFLOW_WORKDIR", str(root))
    store = ReviewStore(url)
    store.add_user("alice", PASSWORD, "reviewer")
    store.close()
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["page"] = "models"
    at.run()
    at.text_input(key="login_user").input("alice")
    at.text_input(key="login_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert not [i.value for i in at.info if "TFMA" in i.value]
    assert at.selectbox(key="models_metric").value == "auc"
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 3  # per-slice bars, ROC, calibration
    texts = [m.value for m in at.markdown]
    assert "ROC curve (overall)" in texts and "Calibration (overall)" in texts
    at.selectbox(key="models_metric").set_value("binary_accuracy").run()
    assert not at.exception
