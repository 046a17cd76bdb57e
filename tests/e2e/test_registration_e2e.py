"""The whole pipeline with the registration task on real HC18 frame pairs, then serving
and ``medflow predict --pairs``: import (pairs.csv) -> ingestion (one example per pair) ->
Transform -> registration Trainer -> TFMA Evaluator (Dice and HD95 before/after, folding) ->
Pusher -> the embedded server -> predict, with the warped image read back as DICOM on the
fixed image's grid (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from medflow.cli import main
from medflow.pipelines.pipeline import COMPONENT_IDS, RESOLVER_ID
from tests.integration.test_serving_helpers import start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

SIZE = 64
HPARAMS = {"epochs": 30, "width": 8, "depth": 3, "batch_size": 8, "learning_rate": 0.005}


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    from medflow.components.ingest.hc18_import import import_hc18
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    data = tmp_path_factory.mktemp("hc18")
    import_hc18(shared_data / "hc18", data, limit=120)
    config = PipelineConfig(
        data_root=str(data / "dicom"),
        label_manifest=str(data / "pairs.csv"),
        task="registration",
        image_size=SIZE,
        hyperparameters=HPARAMS,
        thresholds={"min_dice": 0.0, "max_folding": 0.05},
        pipeline_name="hc18-reg",
        model_name="hc18reg",
    )
    summary = run_local(config, workdir=tmp_path_factory.mktemp("work"), progress=None)
    return summary, data


def test_every_component_ran_and_the_evaluator_measured_dice_and_folding(run):
    summary, _ = run
    for name in COMPONENT_IDS:
        if name != RESOLVER_ID:
            assert summary["components"][name]["status"] == "executed", name
    overall = summary["metrics"]["overall"]
    assert 0.3 < overall["dice_before"] < 1 and 0.3 < overall["dice_after"] <= 1
    assert 0 <= overall["folding_fraction"] < 0.05
    # HD95 in mm from the examples' pixel spacing (HC18: ~0.1-0.2 mm pixels, ~3 mm at 64 px)
    assert 0 < overall["hd95_before_mm"] < 100 and 0 <= overall["hd95_after_mm"] < 100
    assert summary["blessed"] and summary["pushed"]
    contract = json.loads((Path(summary["model_path"]) / "contract.json").read_text())
    assert contract["task"] == "registration"
    inputs = contract["signatures"]["serving_default"]["inputs"]
    assert inputs["image"]["shape"] == inputs["moving"]["shape"] == [-1, SIZE, SIZE, 1]


def test_served_model_registers_pairs_and_writes_the_warped_dicom(run, tmp_path, capsys):
    summary, data = run
    server = start_server(Path(summary["model_path"]).parents[1])
    try:
        code = main(
            [
                "predict", str(data / "dicom"), "--pairs", str(data / "pairs.csv"),
                "--server", f"127.0.0.1:{server.grpc_port}", "--model", "hc18reg", "--json",
                "--contract", summary["model_path"], "--warp-out", str(tmp_path / "warped"),
            ]
        )  # fmt: skip
    finally:
        server.stop()
    assert code == 0
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    assert len(predictions) >= 10
    assert all(p["dice_before"] is not None and p["dice_after"] is not None for p in predictions)
    assert all(p["hd95_after_mm"] is not None for p in predictions)
    for p in predictions[:3]:
        derived = pydicom.dcmread(p["warped_dicom"])
        fixed = pydicom.dcmread(p["fixed"])
        assert (derived.Rows, derived.Columns) == (fixed.Rows, fixed.Columns)
        assert list(derived.PixelSpacing) == list(fixed.PixelSpacing)
        refs = [r.ReferencedSOPInstanceUID for r in derived.ReferencedImageSequence]
        assert refs == [fixed.SOPInstanceUID, pydicom.dcmread(p["moving"]).SOPInstanceUID]
