"""3D classification end to end on real AdrenalMNIST3D cases: ``import-npz`` (3D arrays ->
one Enhanced multi-frame DICOM per case) -> ingestion (labelled volume examples) ->
Transform (volumes passed through) -> the classification Trainer's 3D CNN -> TFMA Evaluator
(AUC, accuracy) -> Pusher (the contract records the training volume_spec); then the pushed
model served and ``medflow predict --json`` on the eval DICOM volumes. A plumbing check on a
small subset (2 epochs, width 4), not a quality number: BENCHMARKS.md has those."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medflow.cli import main
from medflow.pipelines.pipeline import COMPONENT_IDS, RESOLVER_ID
from tests.integration.test_serving_helpers import start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

PER_SPLIT = 24
HPARAMS = {"cls3d_epochs": 2, "cls3d_width": 4, "cls3d_batch_size": 8}


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    from medflow.components.ingest.npz_import import import_npz
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    data = tmp_path_factory.mktemp("adrenal")
    manifest = import_npz(shared_data / "adrenalmnist3d_trainval.npz", data, limit=PER_SPLIT)
    config = PipelineConfig(
        data_root=str(data),
        label_manifest=str(manifest),
        task="classification",
        labels=("normal", "mass"),
        hyperparameters=HPARAMS,
        thresholds={"min_auc": 0.0},
        pipeline_name="adrenal-cls3d",
        model_name="adrenal3d",
    )
    summary = run_local(config, workdir=tmp_path_factory.mktemp("work"), progress=None)
    return summary, data


def test_pipeline_trains_a_3d_classifier_and_pushes_its_volume_spec(run):
    summary, data = run
    for name in COMPONENT_IDS:
        if name != RESOLVER_ID:
            assert summary["components"][name]["status"] == "executed", name
    overall = summary["metrics"]["overall"]
    assert "auc" in overall and overall["example_count"] == PER_SPLIT
    assert summary["blessed"] and summary["pushed"]
    contract = json.loads((Path(summary["model_path"]) / "contract.json").read_text())
    assert contract["volume_spec"] == json.loads((data / "volume_spec.json").read_text())
    assert contract["inputs"][0]["shape"] == [-1, 28, 28, 28, 1]


def test_served_model_predicts_the_eval_volumes(run, tmp_path, capsys):
    summary, data = run
    base = Path(summary["model_path"]).parent.parent
    srv = start_server(base)
    try:
        capsys.readouterr()
        args = ["predict", str(data / "volumes" / "val"), "--server", f"127.0.0.1:{srv.grpc_port}",
                "--model", "adrenal3d", "--model-base", str(base), "--json"]  # fmt: skip
        assert main(args) == 0
        doc = json.loads(capsys.readouterr().out)
    finally:
        srv.stop()
    rows = [r for r in csv.DictReader((data / "labels.csv").open()) if r["split"] == "eval"]
    assert len(doc["predictions"]) == len(rows) == PER_SPLIT
    for p in doc["predictions"]:
        assert p["label"] in ("normal", "mass") and abs(sum(p["probabilities"]) - 1) < 1e-4
