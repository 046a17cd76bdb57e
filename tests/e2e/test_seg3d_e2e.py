"""3D segmentation end to end on real hippocampus MRI: import-nifti (24 volumes) ->
ingestion (volume examples) -> Transform (volumes passed through) -> 3D U-Net Trainer
(patches, sliding window in the export) -> TFMA Evaluator (Dice, HD95, volume error per
label; blessing on mean Dice) -> Pusher; then the pushed model served and ``medflow
predict`` on a DICOM series (multi-frame SEG read back, frames on the source slices) and on
eval NIfTI volumes (label maps with the source affine, Dice against the human masks)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from medflow.cli import main
from medflow.components.dicom.keys import DeidKey
from medflow.pipelines.pipeline import COMPONENT_IDS, RESOLVER_ID
from tests.integration.test_serving_helpers import start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

LABELS = ("background", "anterior", "posterior")
HPARAMS = {"seg3d_steps": 160, "seg3d_width": 8, "seg3d_batch_size": 4}
N = 24


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    from medflow.components.ingest.nifti_import import import_nifti
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    src = tmp_path_factory.mktemp("hippo")
    for sub in ("imagesTr", "labelsTr"):
        (src / sub).mkdir()
        for f in sorted((shared_data / "hippocampus" / sub).glob("*.nii.gz"))[:N]:
            shutil.copyfile(f, src / sub / f.name)
    data = tmp_path_factory.mktemp("imported")
    manifest = import_nifti(src / "imagesTr", src / "labelsTr", data, DeidKey(b"e2e-key-" * 4))
    config = PipelineConfig(
        data_root=str(data),
        label_manifest=str(manifest),
        task="segmentation",
        labels=LABELS,
        hyperparameters=HPARAMS,
        thresholds={"min_dice": 0.3},
        pipeline_name="hippo-seg3d",
        model_name="hippo3d",
    )
    summary = run_local(config, workdir=tmp_path_factory.mktemp("work"), progress=None)
    return summary, data


def test_pipeline_trains_evaluates_per_label_and_pushes(run):
    summary, _ = run
    for name in COMPONENT_IDS:
        if name != RESOLVER_ID:
            assert summary["components"][name]["status"] == "executed", name
    overall = summary["metrics"]["overall"]
    assert overall["dice"] > 0.4, overall
    assert overall["dice_1"] > 0.3 and overall["dice_2"] > 0.3
    assert 0 < overall["hausdorff95_mm_1"] < 40  # mm, from the volume affine
    assert "volume_error_ml_2" in overall
    assert summary["blessed"] and summary["pushed"]


def test_served_model_predicts_dicom_series_and_nifti(run, shared_data, tmp_path):
    summary, data = run
    srv = start_server(Path(summary["model_path"]).parent.parent)
    try:
        base = str(Path(summary["model_path"]).parent.parent)
        target = [
            "--server",
            f"127.0.0.1:{srv.grpc_port}",
            "--model",
            "hippo3d",
            "--model-base",
            base,
        ]
        series = tmp_path / "Study1"
        shutil.copytree(shared_data / "hippocampus/dicom_unlabeled/Study1_13_HCropVolume", series)
        assert main(["predict", str(series), "--seg-out", str(tmp_path / "seg"), *target]) == 0
        (seg_file,) = (tmp_path / "seg").glob("seg-*.dcm")
        seg = hd.seg.segread(seg_file)
        sources = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, series.glob("*.dcm"))}
        assert int(seg.NumberOfFrames) <= len(sources) * (len(LABELS) - 1)  # frames per segment
        assert [s.SegmentLabel for s in seg.SegmentSequence] == list(LABELS[1:])  # the contract's
        for frame in seg.PerFrameFunctionalGroupsSequence:
            ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
            src = sources[str(ref.ReferencedSOPInstanceUID)]
            position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            assert np.allclose(position, [float(v) for v in src.ImagePositionPatient], atol=1e-3)

        with (data / "labels.csv").open() as fh:
            evals = [r for r in csv.DictReader(fh) if r["split"] == "eval"]
        (tmp_path / "in").mkdir()
        for r in evals:
            shutil.copyfile(data / r["path"], tmp_path / "in" / f"{r['_id']}.nii.gz")
        assert (
            main(["predict", str(tmp_path / "in"), "--nifti-out", str(tmp_path / "out"), *target])
            == 0
        )
        dices = []
        for r in evals:
            pred = nib.load(tmp_path / "out" / f"{r['_id']}.nii.gz")
            true = nib.load(data / r["mask"])
            assert np.allclose(pred.affine, true.affine) and pred.shape == true.shape
            p, t = np.asarray(pred.dataobj) > 0, np.asarray(true.dataobj) > 0
            dices.append(2 * (p & t).sum() / (p.sum() + t.sum()))
        assert np.mean(dices) > 0.4  # hippocampus vs background, on the source grid
    finally:
        srv.stop()
