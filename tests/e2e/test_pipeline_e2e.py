"""The whole pipeline on real data (BreastMNIST ultrasound -> DICOM) with LocalDagRunner.

One module-scoped run feeds several tests: components, ingest accounting, blessing both
ways, the pushed model in a fresh process against the Evaluator's numbers, and caching.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medflow.pipelines.pipeline import COMPONENT_IDS, RESOLVER_ID

# The module's pipeline runs (blessed, cached, refused) happen in the first test's setup.
pytestmark = pytest.mark.timeout(1800)

EXECUTED = tuple(c for c in COMPONENT_IDS if c != RESOLVER_ID)
# Calibration off: 4 epochs leave a near-constant model whose fitted temperature (20)
# squeezes every score into 0.5 +- 0.003, finer than TFMA's 10,000 AUC buckets, so the
# scores' exact AUC and TFMA's would differ for a reason this test is not about.
HPARAMS = {"epochs": 4, "patience": 0, "width": 16, "calibration": "none"}


@pytest.fixture(scope="module")
def demo_data(shared_data, tmp_path_factory):
    from medflow.components.ingest.npz_import import import_npz

    out = tmp_path_factory.mktemp("breast")
    manifest = import_npz(
        shared_data / "breastmnist.npz", out, splits=("train", "val"), limit=240, modality="US"
    )
    return manifest


@pytest.fixture(scope="module")
def runs(demo_data, tmp_path_factory):
    """Three runs in one work folder: blessed, the same again (cache), then refused."""
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    workdir = tmp_path_factory.mktemp("work")
    config = PipelineConfig(
        data_root=str(demo_data.parent / "dicom"),
        label_manifest=str(demo_data),
        labels=("malignant", "benign"),
        hyperparameters=HPARAMS,
        thresholds={"min_auc": 0.5},
    )
    first = run_local(config, workdir=workdir, progress=None)
    again = run_local(config, workdir=workdir, progress=None)
    refused = run_local(
        config.replace(thresholds={"min_auc": 0.999}), workdir=workdir, progress=None
    )
    return {"first": first, "again": again, "refused": refused, "workdir": workdir}


def test_every_component_executed(runs):
    components = runs["first"]["components"]
    for name in EXECUTED:
        assert components[name]["status"] == "executed", (name, components[name])


def test_ingest_counts_reconcile(runs, demo_data):
    ingest = runs["first"]["ingest"]
    n_files = len(list((demo_data.parent / "dicom").rglob("*.dcm")))
    assert ingest["inputs"] == n_files == 240 + 78
    assert ingest["inputs"] == ingest["written"] + ingest["quarantined"] + ingest["duplicates"]
    report = json.loads((Path(ingest["uri"]) / "ingest_report.json").read_text())
    assert report["counts"]["inputs"] == ingest["inputs"]
    # The manifest's split column puts the official val images in the eval split.
    assert report["splits"]["eval"]["examples"] == 78


def test_blessed_model_is_pushed_with_contract(runs):
    first = runs["first"]
    assert first["blessed"] and first["pushed"]
    version_dir = Path(first["model_path"])
    assert version_dir.parent.name == "medflow-classifier"
    assert (version_dir / "saved_model.pb").is_file()
    contract = json.loads((version_dir / "contract.json").read_text())
    assert contract["labels"] == ["malignant", "benign"]
    assert contract["signatures"]["serving_default"]["inputs"]["image"]["shape"] == [-1, 28, 28, 1]
    # class names inside the model, and what it was trained on (issue 24, items 2 and 9)
    outputs = contract["signatures"]["serving_default"]["outputs"]
    assert outputs["classes"]["dtype"] == outputs["class_name"]["dtype"] == "string"
    assert contract["expected_input"]["modality"] == ["US"]
    assert contract["expected_input"]["photometric"] == ["MONOCHROME2"]


def test_second_run_is_served_from_cache(runs):
    again = runs["again"]["components"]
    # The Evaluator's baseline input changed (the resolver now finds the model blessed by
    # the first run), so it evaluates again; everything up to the Trainer is reused.
    for name in EXECUTED[:6]:
        assert again[name]["status"] == "cached", (name, again[name])
    assert runs["again"]["blessed"]
    # Same model content: no second version directory.
    versions = [p for p in Path(runs["first"]["model_path"]).parent.iterdir() if p.is_dir()]
    assert len(versions) == 1


def test_thresholds_refuse_a_weak_model(runs):
    refused = runs["refused"]
    assert refused["components"]["Trainer"]["status"] == "cached"
    assert refused["components"]["Evaluator"]["status"] == "executed"
    assert not refused["blessed"] and not refused["pushed"]
    # why: the threshold that failed, its value against the threshold (issue 24, item 7)
    assert any(f.startswith("auc ") and "needs >= 0.999" in f for f in refused["blessing_failures"])


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


_FRESH = r"""
import json, sys, numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
files = sorted(tf.io.gfile.glob(sys.argv[2] + "/Split-eval/*"))
records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
out = model.signatures["serve_examples"](examples=tf.constant(records))
labels, images = [], []
for r in records:
    ex = tf.train.Example.FromString(r).features.feature
    labels.append(ex["label"].int64_list.value[0])
    images.append(np.frombuffer(ex["image"].bytes_list.value[0], "<f4").reshape(28, 28, 1))
raw = model.signatures["serving_default"](image=tf.constant(np.stack(images)))
print(json.dumps({"score": out["score"].numpy().tolist(), "raw": raw["score"].numpy().tolist(),
                  "label": labels}))
"""


def test_pushed_model_in_fresh_process_matches_evaluator(runs):
    first = runs["first"]
    examples_uri = Path(first["ingest"]["uri"]).parents[1] / "examples"
    examples_uri = next(p for p in sorted(examples_uri.iterdir()) if (p / "Split-eval").is_dir())
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH, first["model_path"], str(examples_uri)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    scores, raw, labels = (np.array(got[k]) for k in ("score", "raw", "label"))
    # Raw-tensor and tf.Example signatures run the same Transform graph.
    np.testing.assert_allclose(raw, scores, rtol=1e-5, atol=1e-6)
    overall = first["metrics"]["overall"]
    assert overall["example_count"] == len(labels) == 78
    assert _auc(scores, labels) == pytest.approx(overall["auc"], abs=2e-3)
    accuracy = float(np.mean((scores >= 0.5) == (labels == 1)))
    assert accuracy == pytest.approx(overall["binary_accuracy"], abs=1e-6)
