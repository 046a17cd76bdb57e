"""Runs and models data for the dashboard, read from a real ML Metadata SQLite store and folders."""

from __future__ import annotations

import shutil

import pytest

from medflow.core.errors import ConfigError, ServiceError
from medflow.dashboard import lineage, pushed_models
from medflow.dashboard.config import Settings
from tests.support.sample_runs import (
    EVAL_METRICS,
    PIPELINE,
    QUARANTINE,
    write_pushed_version,
    write_sample_run,
)

RUN1 = "2025-01-01T10:00:00.000000"
RUN2 = "2025-01-02T10:00:00.000000"
NODES = ["DicomExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Trainer"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("workdir")
    dest = write_pushed_version(root / "models", 7)
    db = root / "metadata" / f"{PIPELINE}.sqlite"
    write_sample_run(db, root / "pipelines", run_id=RUN1, pushed_destination=dest, pushed_version=7)
    write_sample_run(db, root / "pipelines", run_id=RUN2, fail_trainer=True)
    return root


@pytest.fixture(scope="module")
def runs(workdir):
    store = lineage.open_store(lineage.sqlite_config(workdir / "metadata" / f"{PIPELINE}.sqlite"))
    return {r.run_id: r for r in lineage.list_runs(store)}


def test_runs_newest_first_with_components_in_order(workdir, runs):
    assert list(runs) == [RUN2, RUN1]
    ok, failed = runs[RUN1], runs[RUN2]
    assert ok.pipeline == failed.pipeline == PIPELINE
    assert [c.node_id for c in ok.components] == [*NODES, "Evaluator", "Pusher"]
    assert [c.node_id for c in failed.components] == NODES
    assert ok.state == "COMPLETE" and failed.state == "FAILED"
    assert [c.state for c in failed.components] == ["COMPLETE"] * 4 + ["FAILED"]
    for c in ok.components:
        # Each sample execution stays RUNNING >= 10 ms before it is published.
        assert c.ended is not None and 0.01 <= c.duration_s < 30
    assert ok.duration_s >= sum(c.duration_s for c in ok.components) - 0.01
    assert ok.components[0].type.endswith("DicomExampleGen")


def test_outputs_carry_keys_types_and_uris(runs):
    gen = runs[RUN1].components[0]
    assert {(a.key, a.type) for a in gen.outputs} == {
        ("examples", "Examples"),
        ("ingest_report", "medflow.IngestReport"),
    }
    for a in gen.outputs:
        assert a.uri.endswith(f"DicomExampleGen/{a.key}/{gen.execution_id}") and a.state == "LIVE"
    assert runs[RUN2].components[-1].outputs == []  # the failed Trainer produced nothing


def test_ingest_counts_and_quarantine_reasons(runs):
    [report] = runs[RUN1].artifacts("medflow.IngestReport")
    summary = lineage.ingest_summary(report)
    assert summary.note == ""
    assert summary.counts == {
        "inputs": 25,
        "written": 20,
        "quarantined": 3,
        "duplicates": 2,
        "examples": 20,
    }
    assert summary.quarantine_reasons == QUARANTINE
    assert [f["reason"] for f in summary.quarantined_files] == [
        "not_dicom",
        "not_dicom",
        "no_pixel_data",
    ]
    assert summary.splits["train"]["examples"] == 16


def test_ingest_falls_back_to_artifact_properties_without_the_report(runs, tmp_path):
    [report] = runs[RUN2].artifacts("medflow.IngestReport")
    moved = lineage.ArtifactInfo(**{**report.__dict__, "uri": str(tmp_path / "gone")})
    summary = lineage.ingest_summary(moved)
    assert "no report at" in summary.note
    assert summary.counts["quarantined"] == 3 and summary.counts["inputs"] == 25
    assert summary.quarantine_reasons == QUARANTINE  # from quarantined_<reason> properties
    assert summary.quarantined_files == []


def test_anomalies_from_example_validator(runs):
    [artifact] = runs[RUN1].artifacts("ExampleAnomalies")
    [anomaly] = lineage.load_anomalies(artifact.uri)
    assert (anomaly.split, anomaly.feature, anomaly.severity) == ("eval", "img_max", "ERROR")
    assert anomaly.short_description == "Out-of-range values"


def test_push_lineage_finds_evaluation_and_blessing(workdir, runs):
    store = lineage.open_store(lineage.sqlite_config(workdir / "metadata" / f"{PIPELINE}.sqlite"))
    dest = workdir / "models" / "medflow-classifier" / "7"
    pushed = lineage.push_lineage(store, str(dest), "7")
    assert pushed.run_id == RUN1 and pushed.blessed is True
    [evaluation] = runs[RUN1].artifacts("ModelEvaluation")
    assert pushed.evaluation_uri == evaluation.uri
    assert pushed.blessing["current_model"] == runs[RUN1].artifacts("Model")[0].uri
    assert lineage.push_lineage(store, str(workdir / "models" / "other" / "3"), "3") is None


def test_settings_find_the_workdir_store_and_models(workdir):
    settings = Settings(workdir=str(workdir))
    assert settings.mlmd_sqlite_files() == {PIPELINE: workdir / "metadata" / f"{PIPELINE}.sqlite"}
    assert settings.models_path == workdir / "models"
    assert Settings(workdir=str(workdir / "nothing")).mlmd_sqlite_files() == {}
    assert Settings(mlmd_db=str(workdir / "missing.sqlite")).mlmd_sqlite_files() == {}


def test_text_config_files(workdir, tmp_path):
    db = workdir / "metadata" / f"{PIPELINE}.sqlite"
    sqlite_cfg = tmp_path / "sqlite.pbtxt"
    sqlite_cfg.write_text(f'sqlite {{ filename_uri: "{db}" connection_mode: READONLY }}\n')
    store = lineage.open_store(lineage.config_from_file(sqlite_cfg))
    assert [r.run_id for r in lineage.list_runs(store)] == [RUN2, RUN1]
    mysql_cfg = tmp_path / "mysql.pbtxt"
    mysql_cfg.write_text('mysql { host: "mysql.kubeflow" port: 3306 database: "metadb" user: "u" }')
    config = lineage.config_from_file(mysql_cfg)
    assert config.mysql.host == "mysql.kubeflow" and config.mysql.port == 3306
    grpc_cfg = tmp_path / "grpc.pbtxt"
    grpc_cfg.write_text('host: "metadata-grpc-service.kubeflow" port: 8080')
    assert lineage.config_from_file(grpc_cfg).port == 8080
    bad = tmp_path / "bad.pbtxt"
    bad.write_text("postgres { }")
    with pytest.raises(ConfigError, match="neither a text-format ConnectionConfig"):
        lineage.config_from_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        lineage.config_from_file(tmp_path / "absent.pbtxt")


def test_missing_sqlite_store_is_a_clear_error_and_not_created(tmp_path):
    path = tmp_path / "absent.sqlite"
    with pytest.raises(ServiceError, match="cannot open ML Metadata at .*absent.sqlite"):
        lineage.open_store(lineage.sqlite_config(path))
    assert not path.exists()


def test_model_versions_listing(tmp_path):
    base = tmp_path / "models"
    assert pushed_models.list_versions(base) == [] and pushed_models.listing_key(base) == ()
    write_pushed_version(base, 3)
    write_pushed_version(base, 12)
    (base / "medflow-classifier" / ".staging-13-abcd").mkdir()  # a push in progress
    (base / "medflow-classifier" / "14").mkdir()  # copied by hand, no contract
    before = pushed_models.listing_key(base)
    versions = pushed_models.list_versions(base)
    assert [v.version for v in versions] == [14, 12, 3]
    assert versions[0].contract is None and "no contract.json" in versions[0].problem
    v12 = versions[1]
    assert v12.problem == "" and v12.has_saved_model
    assert v12.contract["labels"] == ["normal", "pneumonia"]
    assert v12.overall_metrics == EVAL_METRICS
    # A new push or a rewritten contract changes the cache key.
    write_pushed_version(base, 15)
    assert pushed_models.listing_key(base) != before
    contract = base / "medflow-classifier" / "3" / "contract.json"
    contract.write_text("{not json")
    [v3] = [v for v in pushed_models.list_versions(base) if v.version == 3]
    assert v3.contract is None and "cannot read" in v3.problem
    shutil.rmtree(base / "medflow-classifier" / "12")
    assert 12 not in [v.version for v in pushed_models.list_versions(base)]


def test_contract_evaluation_uri():
    assert pushed_models.contract_evaluation_uri({"evaluation_uri": "/e/1"}) == "/e/1"
    assert pushed_models.contract_evaluation_uri({"evaluation": {"uri": "/e/2"}}) == "/e/2"
    assert pushed_models.contract_evaluation_uri({"metrics": {}}) is None


def test_roc_and_calibration_points_from_tfma_plot_data():
    # TFMA's JSON form of confusionMatrixAtThresholds: zero counts are left out.
    matrices = [
        {"threshold": -1e-6, "truePositives": 5.0, "falsePositives": 5.0},
        {"threshold": 0.5, "truePositives": 4.0, "falseNegatives": 1.0, "trueNegatives": 4.0,
         "falsePositives": 1.0},
        {"threshold": 1.0, "falseNegatives": 5.0, "trueNegatives": 5.0},
    ]  # fmt: skip
    assert pushed_models.roc_points(matrices) == [(0.0, 0.0), (0.2, 0.8), (1.0, 1.0)]
    buckets = [
        {"lowerThresholdInclusive": "-Infinity", "upperThresholdExclusive": 0.0},
        {"numWeightedExamples": 4.0, "totalWeightedLabel": 1.0, "totalWeightedRefinedPrediction": 0.4},
        {"numWeightedExamples": 2.0, "totalWeightedLabel": 2.0, "totalWeightedRefinedPrediction": 1.9},
    ]  # fmt: skip
    points = pushed_models.calibration_points(buckets)
    assert points == [
        {"mean_prediction": pytest.approx(0.1), "observed_rate": 0.25, "examples": 4.0},
        {"mean_prediction": pytest.approx(0.95), "observed_rate": 1.0, "examples": 2.0},
    ]
