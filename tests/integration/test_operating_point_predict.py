"""The operating point chosen on eval is the one every output uses (issue 21, item 2).

A small model is calibrated and its cut-off chosen for sensitivity=0.95 on a synthetic eval
split (:func:`fit_outputs`, as the Trainer does), exported behind the real classification
head, served by the embedded server and used by ``medflow predict``: the JSON, the table,
the review store and the DICOM SR pushed to a real Orthanc (read back) all carry the label
decided at that cut-off, and show the cut-off itself.
"""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from medflow.cli import main
from medflow.components.models.operating_point import decide, rates
from medflow.components.tasks.classification.export import classification_head
from medflow.components.tasks.classification.trust import TrustSettings, fit_outputs
from tests.integration import test_predict_dicom
from tests.integration.test_serving_helpers import start_server

NAMES = ("normal", "pneumonia")
SIZE = 28


def _module(head):
    """image -> p(pneumonia) rising steeply (over-confidently) with the image's mean."""
    import tensorflow as tf

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32, "image")])
        def serve(self, image):
            return head(self.raw(image))

        def raw(self, image):
            z = 6.0 * tf.tanh(tf.reduce_mean(image, axis=[1, 2, 3]) / 300.0 - 0.2)
            return tf.nn.softmax(tf.stack([tf.zeros_like(z), z], axis=1))

    return Module()


@pytest.fixture(scope="module")
def chosen(tmp_path_factory):
    """(OperatingPoint, eval labels, eval scores of the exported model, models folder)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.4).astype(np.int64)
    means = rng.normal(np.where(labels == 1, 200.0, 0.0), 150.0)
    images = np.repeat(means[:, None], SIZE * SIZE, axis=1).reshape(-1, SIZE, SIZE, 1)
    images = tf.constant(images, tf.float32)
    raw = _module(None).raw(images).numpy()
    settings = TrustSettings(operating_point="sensitivity=0.95", bootstrap=200)
    cal, point, report = fit_outputs(settings, raw, labels, np.arange(len(labels)) // 2)
    module = _module(classification_head(NAMES, cal, point.threshold))
    base = tmp_path_factory.mktemp("models")
    tf.saved_model.save(
        module, str(base / "chest" / "1"), signatures={"serving_default": module.serve}
    )
    served = tf.saved_model.load(str(base / "chest" / "1")).signatures["serving_default"]
    scores = served(image=images)["score"].numpy()
    assert report["calibration"]["after"]["ece"] < report["calibration"]["before"]["ece"]
    return point, labels, scores, base


@pytest.fixture(scope="module")
def server(chosen):
    srv = start_server(chosen[3])
    yield srv
    srv.stop()


dicoms = test_predict_dicom.dicoms


def test_sensitivity_target_is_met_on_eval_by_the_exported_model(chosen):
    point, labels, scores, _ = chosen
    assert point.sensitivity >= 0.95
    # the served (calibrated, float32) scores give the same calls as the chosen point
    assert rates(scores, labels, point.threshold) == (point.sensitivity, point.specificity)


def test_predict_table_json_and_review_store_use_the_stored_cut_off(
    chosen, server, dicoms, tmp_path, capsys
):
    from medflow.dashboard.store import ReviewStore

    point = chosen[0]
    url = f"sqlite:///{tmp_path}/review.db"
    target = ["--server", f"127.0.0.1:{server.grpc_port}", "--model", "chest"]
    assert (
        main(["predict", *map(str, dicoms), *target, "--json", "--record", "--store-url", url]) == 0
    )
    preds = json.loads(capsys.readouterr().out)["predictions"]
    store = ReviewStore(url)
    try:
        for p in preds:
            assert p["threshold"] == pytest.approx(point.threshold, rel=1e-6)
            assert p["class_id"] == decide([p["score"]], p["threshold"])[0]
            assert p["label"] == NAMES[p["class_id"]]
            assert store.get_prediction(p["review_id"]).predicted_index == p["class_id"]
    finally:
        store.close()
    assert main(["predict", *map(str, dicoms), *target]) == 0
    table = capsys.readouterr().out
    assert f"p(pneumonia)>={point.threshold:.4f}" in table


def test_pushed_sr_reads_back_with_the_label_and_cut_off(
    chosen, server, dicoms, tmp_path, monkeypatch, capsys
):
    import highdicom as hd

    from medflow.components.dicom.dicomweb import Credentials, DicomwebSource, Query, RetryPolicy
    from medflow.components.dicom.reader import parse
    from tests.integration.orthanc import orthanc_server

    ct = pydicom.dcmread(dicoms[0])
    for pacs in orthanc_server(tmp_path / "orthanc"):
        retry = RetryPolicy(attempts=2, backoff_s=0.05, timeout_s=10)
        source = DicomwebSource(pacs.dicomweb_url, Credentials(*pacs.auth), retry=retry)
        assert source.store([dicoms[0].read_bytes()]) == 1
        monkeypatch.setenv("MEDFLOW_DICOMWEB_USERNAME", pacs.auth[0])
        monkeypatch.setenv("MEDFLOW_DICOMWEB_PASSWORD", pacs.auth[1])
        code = main(
            ["predict", "--dicomweb", pacs.dicomweb_url, "--study", ct.StudyInstanceUID, "--push"]
            + ["--server", f"127.0.0.1:{server.grpc_port}", "--model", "chest", "--json"]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        (pred,) = json.loads(out)["predictions"]
        (ref,) = source.search(Query(study_uids=(ct.StudyInstanceUID,), modality="SR"))
        sr = hd.sr.Comprehensive3DSR.from_dataset(parse(source.retrieve(ref), "sr"))
        (group,) = sr.content.get_image_measurement_groups()
        (label,) = group.get_qualitative_evaluations()
        values = {m.name.meaning: m.value for m in group.get_measurements()}
        assert values["Operating point score cut-off"] == pytest.approx(
            chosen[0].threshold, rel=1e-6
        )
        called = decide([values["Probability of pneumonia"]], chosen[0].threshold)[0]
        assert label.value.meaning == pred["label"] == NAMES[called]
