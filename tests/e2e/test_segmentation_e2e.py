"""The whole pipeline with the segmentation task on real HC18 ultrasound (DICOM + masks).

Import a few dozen HC18 pairs (split by fetus), run ingestion -> ... -> Transform (mask
passed through) -> U-Net Trainer -> TFMA Evaluator (Dice, IoU, HD95 in mm as custom
metrics, blessing on Dice) -> Pusher, then check the pushed model in a fresh process
against the Evaluator's numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medflow.pipelines.pipeline import COMPONENT_IDS, RESOLVER_ID

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # 40 U-Net epochs in the run

SIZE = 64
HPARAMS = {"epochs": 40, "width": 8, "depth": 3, "batch_size": 4, "validation_fraction": 0.0}


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    from medflow.components.ingest.hc18_import import import_hc18
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    data = tmp_path_factory.mktemp("hc18")
    manifest = import_hc18(shared_data / "hc18", data, limit=40)
    config = PipelineConfig(
        data_root=str(data / "dicom"),
        label_manifest=str(manifest),
        task="segmentation",
        image_size=SIZE,
        hyperparameters=HPARAMS,
        thresholds={"min_dice": 0.3},
        pipeline_name="hc18-seg",
        model_name="hc18",
    )
    summary = run_local(config, workdir=tmp_path_factory.mktemp("work"), progress=None)
    return summary, manifest


def test_every_component_ran_and_the_model_was_blessed_on_dice(run):
    summary, _ = run
    for name in COMPONENT_IDS:
        if name != RESOLVER_ID:
            assert summary["components"][name]["status"] == "executed", name
    overall = summary["metrics"]["overall"]
    assert overall["dice"] > 0.3 and 0 < overall["iou"] <= overall["dice"]
    assert 0 < overall["hausdorff95_mm"] < 100  # mm, from the ingested pixel spacing
    assert summary["blessed"] and summary["pushed"]
    contract = json.loads((Path(summary["model_path"]) / "contract.json").read_text())
    assert contract["task"] == "segmentation"
    outputs = contract["signatures"]["serving_default"]["outputs"]
    assert outputs["probabilities"]["shape"] == [-1, SIZE, SIZE]
    assert outputs["mask"]["dtype"] == "uint8"
    # issue 21: the mask threshold chosen on eval for Dice, and Dice / HD95 (mm, the pixel
    # spacing passed through the Transform) with patient-level intervals, on the same split
    # the Evaluator scores with the served threshold
    point = contract["operating_point"]
    assert point["rule"] == "dice" and 0 < point["threshold"] < 1
    assert point["dice"] >= point["dice_at_0.5"] - 1e-9
    assert point["dice"] == pytest.approx(overall["dice"], abs=2e-3)
    intervals = contract["metrics"]["eval_intervals"]["metrics"]
    assert intervals["dice"]["lower"] <= intervals["dice"]["value"] <= intervals["dice"]["upper"]
    hd95 = intervals["hausdorff95_mm"]
    assert hd95["value"] == pytest.approx(overall["hausdorff95_mm"], rel=2e-2)
    assert hd95["lower"] <= hd95["value"] <= hd95["upper"]
    assert "note" not in contract["metrics"]["eval_intervals"]  # every image had a spacing


_FRESH = r"""
import json, sys, numpy as np, tensorflow as tf
from medflow.components.tasks.segmentation.metrics import dice, hausdorff95_mm, spacing_of
model = tf.saved_model.load(sys.argv[1])
files = sorted(tf.io.gfile.glob(sys.argv[2] + "/Split-eval/*"))
records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
out = model.signatures["serve_examples"](examples=tf.constant(records))
size = int(sys.argv[3])
images, dices, hds = [], [], []
for r, pred in zip(records, out["mask"].numpy()):
    ex = tf.train.Example.FromString(r).features.feature
    true = np.frombuffer(ex["mask"].bytes_list.value[0], np.uint8).reshape(size, size)
    dices.append(dice(pred, true))
    hds.append(hausdorff95_mm(pred, true, spacing_of(ex["pixel_spacing"].float_list.value)))
    images.append(np.frombuffer(ex["image"].bytes_list.value[0], "<f4").reshape(size, size, 1))
raw = model.signatures["serving_default"](image=tf.constant(np.stack(images)))
same = float(np.abs(raw["probabilities"].numpy() - out["probabilities"].numpy()).max())
print(json.dumps({"n": len(records), "dice": float(np.mean(dices)), "hd95": float(np.mean(hds)),
                  "max_diff": same, "threshold": float(out["threshold"].numpy()[0])}))
"""


def test_pushed_model_in_fresh_process_matches_evaluator(run):
    summary, _ = run
    examples = Path(summary["ingest"]["uri"]).parents[1] / "examples"
    examples = next(p for p in sorted(examples.iterdir()) if (p / "Split-eval").is_dir())
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH, summary["model_path"], str(examples), str(SIZE)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    overall = summary["metrics"]["overall"]
    assert got["n"] == overall["example_count"] > 0
    assert got["max_diff"] < 1e-5  # raw-tensor and tf.Example signatures agree
    assert got["dice"] == pytest.approx(overall["dice"], abs=1e-6)
    assert got["hd95"] == pytest.approx(overall["hausdorff95_mm"], rel=1e-5)
    assert np.isfinite(got["hd95"])
    contract = json.loads((Path(summary["model_path"]) / "contract.json").read_text())
    assert got["threshold"] == pytest.approx(contract["operating_point"]["threshold"])
