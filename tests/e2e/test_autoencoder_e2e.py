"""Autoencoders through the whole pipeline on real data (BreastMNIST ultrasound -> DICOM):

1. ``--task autoencoder`` on the pretraining pool (``pool=all``: both splits, and the studies
   the label manifest lacks: the run ingests without a manifest, labels are never read),
   reconstruction error and ELBO from the Evaluator, pushed and served like any model;
2. a classifier initialised from that autoencoder's encoder (``init``), trained with its
   out-of-distribution guard (a second Trainer) and ``--require-guard``: the guard is pushed
   beside it with the same version, the contract carries the calibrated threshold, the run
   summary and ML Metadata record which autoencoder initialised the classifier; the
   unlabelled studies never reach the classifier (quarantined as unlabeled);
3. ``medflow predict`` against the embedded server marks each result ``in_distribution``.
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
UNLABELLED = 30  # train images written as DICOM whose manifest rows are dropped


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    from medflow.components.ingest.npz_import import import_npz

    out = tmp_path_factory.mktemp("breast")
    manifest = import_npz(
        shared_data / "breastmnist.npz", out, limit=240 + UNLABELLED, modality="US"
    )
    lines = manifest.read_text().splitlines()  # the last train images lose their labels
    dropped = [line for line in lines if ",train,train," in line][-UNLABELLED:]
    manifest.write_text("\n".join(line for line in lines if line not in dropped) + "\n")
    return manifest


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    workdir = tmp_path_factory.mktemp("work")
    common = {"data_root": str(data.parent / "dicom"), "label_manifest": str(data)}
    pool = {**common, "label_manifest": ""}  # every study, labelled or not
    ae = run_local(
        PipelineConfig(task="autoencoder", hyperparameters={"epochs": 4, "pool": "all"}, **pool),
        workdir=workdir,
        progress=None,
    )
    classifier = PipelineConfig(
        labels=("malignant", "benign"),
        hyperparameters={"epochs": 3, "patience": 0, "backbone": "small_cnn", "width": 16,
                         "init": str(workdir / "models" / "medflow-autoencoder"),
                         "init_frozen_epochs": 1},
        thresholds={"min_auc": 0.5},
        guard=True,
        require_guard=True,
        guard_hyperparameters={"epochs": 4},
        **common,
    )  # fmt: skip
    cls = run_local(classifier, workdir=workdir, progress=None)
    return {"ae": ae, "cls": cls, "workdir": workdir}


def test_autoencoder_run_reports_reconstruction_metrics_and_is_pushed(runs):
    from medflow.core.contract import ModelContract

    ae = runs["ae"]
    overall = ae["metrics"]["overall"]
    assert 0 < overall["reconstruction_error"] < 1.0 and overall["elbo"] < 0
    assert ae["blessed"] and ae["pushed"]
    contract = ModelContract.load(ae["model_path"])
    assert contract.task == "autoencoder" and contract.labels == ()
    assert {t.name for t in contract.outputs} >= {"reconstruction", "score", "elbo"}


def test_unlabelled_studies_reach_the_autoencoder_and_never_the_classifier(runs, data):
    from medflow.pipelines.run_summary import training_info

    ae, cls = runs["ae"], runs["cls"]
    labelled = len(data.read_text().splitlines()) - 1
    assert ae["ingest"]["examples"] == labelled + UNLABELLED  # no manifest: every study
    info = training_info(ae["trained_model_uri"])
    assert info["pool"] == "all" and ae["ingest"]["quarantined"] == 0
    # both splits' examples train it, less the early-stopping holdout
    assert info["train_images"] + info["guard"]["holdout_images"] == labelled + UNLABELLED
    assert cls["ingest"]["quarantined"] == UNLABELLED  # no manifest row: unlabeled
    assert cls["ingest"]["examples"] == labelled
    counts = training_info(cls["trained_model_uri"])["train_class_counts"]
    assert sum(counts.values()) <= labelled - 78  # the classifier: labelled train rows only


def test_classifier_is_pushed_with_its_guard_and_its_lineage(runs):
    from medflow.core.contract import ModelContract
    from medflow.pipelines.run_summary import format_summary

    ae, cls = runs["ae"], runs["cls"]
    assert cls["pushed"], cls
    contract = ModelContract.load(cls["model_path"])
    guard_dir = runs["workdir"] / "models" / "medflow-classifier-guard" / contract.version
    guard = ModelContract.load(guard_dir)
    assert guard.task == "autoencoder" and contract.guard["model_name"] == guard.model_name
    assert contract.guard["threshold"] == pytest.approx(cls["guard"]["threshold"])
    assert cls["init"]["uri"] == ae["model_path"]
    text = format_summary(cls)
    assert "guard: out-of-distribution threshold" in text
    # the guard Evaluator's TFMA false-alarm rate on eval is the Trainer's calibration's
    tfma = cls["guard"]["evaluator"]
    assert tfma["false_alarm_rate"] == pytest.approx(cls["guard"]["false_alarm_rate"], abs=0.02)
    assert tfma["example_count"] == cls["guard"]["eval_images"]
    assert "guard Evaluator (TFMA, eval split): false-alarm rate" in text
    assert cls["components"]["GuardEvaluator"]["status"] == "executed"
    assert f"backbone initialised from: {ae['model_path']}" in text
    # ML Metadata: the Trainer's base_model input is the imported autoencoder
    from ml_metadata.proto import metadata_store_pb2

    from medflow.pipelines.run_summary import metadata_store

    store = metadata_store(runs["workdir"] / "metadata" / "medflow-classification.sqlite")
    trainer = cls["components"]["Trainer"]
    assert trainer["status"] == "executed"
    artifact = store.get_artifacts_by_id([cls["init"]["artifact_id"]])[0]
    events = store.get_events_by_artifact_ids([artifact.id])
    inputs = [e for e in events if e.type == metadata_store_pb2.Event.INPUT]
    assert any(e.path.steps[0].key == "base_model" for e in inputs)
    training = json.loads((guard_dir.parent.parent / "medflow-classifier" / contract.version /
                           "assets.extra" / "training.json").read_text())  # fmt: skip
    assert training["hparams"]["init"] == ae["model_path"]
    # the contract names the initialising version (what the dashboard's Models page shows)
    init = contract.training_data["init"]
    assert (init["model_name"], init["version"]) == (
        "medflow-autoencoder",
        str(ae["model_version"]),
    )


def test_predict_marks_results_with_the_guard(runs, data, capsys):
    from medflow.cli import main
    from tests.integration.test_serving_helpers import start_server

    server = start_server(runs["workdir"] / "models")
    try:
        files = sorted((data.parent / "dicom" / "val").glob("*.dcm"))[:8]
        code = main(["predict", *map(str, files), "--server", f"127.0.0.1:{server.grpc_port}",
                     "--model", "medflow-classifier", "--json",
                     "--model-base", str(runs["workdir"] / "models")])  # fmt: skip
    finally:
        server.stop()
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    assert code == 0 and len(predictions) == 8
    assert all(isinstance(p["in_distribution"], bool) for p in predictions)
    assert sum(p["in_distribution"] for p in predictions) >= 6
