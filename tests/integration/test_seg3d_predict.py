"""``medflow predict`` with a volume model on the embedded server (real gRPC, real files):
DICOM series in -> one multi-frame SEG per series whose frames lie on the source slices
(the hippocampus series and the 6.5 mm-step oblique tumour series), NIfTI in -> a label map
with the source affine. The model is a small untrained 3D U-Net exported through the real
3D export (volume_model + sliding window + save_with_transform) and published with the
Pusher's ``publish``; only the Transform graph is stood in for, by what the real one does
with volume examples (pass the grid bytes through, preprocessing.volume_passthrough)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from medflow.cli import main
from tests.integration.test_serving_helpers import start_server

GRID = (16, 32, 32)
LABELS = ["background", "anterior", "posterior"]
TUMOUR = "brain_tumor_progression/PGBM-001/04-02-1992-FH-HEADBrain Protocols-79896/11-T1post-80644"


class PassThrough:
    """``tft.TFTransformOutput`` as the volume Transform: the image bytes unchanged."""

    def raw_feature_spec(self):
        import tensorflow as tf

        return {"image": tf.io.FixedLenFeature([], tf.string)}

    def transform_features_layer(self):
        import tensorflow as tf

        class Identity(tf.Module):
            def __call__(self, inputs):
                return {"image": inputs["image"]}

        return Identity()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import keras

    from medflow.components.models.export import save_with_transform
    from medflow.components.models.unet3d import build_unet3d
    from medflow.components.pusher.publish import publish
    from medflow.components.tasks.segmentation.trainer3d import volume_head, volume_model
    from medflow.components.tasks.segmentation.volumes import Seg3DHParams

    keras.utils.set_random_seed(5)
    net = build_unet3d(3, depth=2, width=4)
    hp = Seg3DHParams(patch=(16, 16, 16), depth=2, width=4)
    export = tmp_path_factory.mktemp("export") / "serving"
    save_with_transform(
        volume_model(net, (*GRID, 1), hp), PassThrough(), str(export), (*GRID, 1), volume_head, {}
    )
    base = tmp_path_factory.mktemp("models")
    publish(
        str(export),
        str(base / "seg3d"),
        {"model_name": "seg3d", "task": "segmentation", "labels": LABELS},
    )
    srv = start_server(base)
    yield srv
    srv.stop()


def _predict(srv, *args) -> int:
    return main(
        ["predict", *map(str, args), "--server", f"127.0.0.1:{srv.grpc_port}", "--model", "seg3d"]
    )


def _ipp(ds) -> np.ndarray:
    return np.array([float(v) for v in ds.ImagePositionPatient])


@pytest.mark.parametrize("series", ["hippocampus/dicom_unlabeled/Study1_13_HCropVolume", TUMOUR])
def test_series_in_seg_out_on_the_source_slices(server, shared_data, tmp_path, series, capsys):
    src = tmp_path / "in" / Path(series).name
    shutil.copytree(shared_data / series, src)
    assert (
        _predict(server, src, "--seg-out", tmp_path / "seg", "--nifti-out", tmp_path / "nii") == 0
    )
    assert "volume_ml" in capsys.readouterr().out
    sources = [pydicom.dcmread(p) for p in sorted(src.glob("*.dcm"))]
    (seg_file,) = (tmp_path / "seg").glob("seg-*.dcm")
    seg = hd.seg.segread(seg_file)
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    referenced = {
        str(i.ReferencedSOPInstanceUID)
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in sources}
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert np.allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        [float(v) for v in sources[0].ImageOrientationPatient],
        atol=1e-4,
    )
    assert int(seg.Rows) == int(sources[0].Rows) and int(seg.Columns) == int(sources[0].Columns)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = np.array([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        assert np.allclose(position, _ipp(by_uid[uid]), atol=1e-3)  # on its source slice
    (nii,) = (tmp_path / "nii").glob("*.nii.gz")
    assert nii.name == f"{src.name}.nii.gz"
    label_map = nib.load(nii)
    assert label_map.shape == (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    first = min(
        sources, key=lambda ds: float(np.asarray(label_map.affine)[:3, :3][:, 0] @ _ipp(ds))
    )
    corner = np.diag([-1.0, -1.0, 1.0]) @ label_map.affine[:3, 3]  # RAS -> LPS
    assert any(np.allclose(corner, _ipp(ds), atol=1e-3) for ds in sources), first


def test_nifti_in_label_map_out_with_the_source_affine(server, shared_data, tmp_path):
    names = sorted((shared_data / "hippocampus" / "imagesTr").glob("*.nii.gz"))[:2]
    (tmp_path / "in").mkdir()
    for f in names:
        shutil.copyfile(f, tmp_path / "in" / f.name)
    assert _predict(server, tmp_path / "in", "--nifti-out", tmp_path / "out") == 0
    for f in names:
        src, out = nib.load(f), nib.load(tmp_path / "out" / f.name)
        assert out.shape == src.shape and np.allclose(out.affine, src.affine)
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2}


def test_bad_volume_is_reported_and_others_predicted(server, shared_data, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    good = sorted((shared_data / "hippocampus" / "imagesTr").glob("*.nii.gz"))[0]
    shutil.copyfile(good, tmp_path / "in" / good.name)
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), tmp_path / "in" / "t.nii.gz"
    )
    assert _predict(server, tmp_path / "in", "--nifti-out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "t.nii.gz: a 4D NIfTI (shape [4, 4, 4, 2])" in err
    assert (tmp_path / "out" / good.name).is_file() and not (tmp_path / "out" / "t.nii.gz").exists()


@pytest.mark.slow  # a real Orthanc: about 20 s idle, a minute under load
def test_study_from_the_pacs_in_seg_pushed_back(server, shared_data, tmp_path, monkeypatch, capsys):
    """--dicomweb --study --push with a volume model: the series is fetched from a real
    Orthanc, predicted as a volume, and its multi-frame SEG stored in the same study."""
    from medflow.components.dicom.dicomweb import Credentials, DicomwebSource, Query, RetryPolicy
    from tests.integration.orthanc import orthanc_server

    files = sorted(
        (shared_data / "hippocampus/dicom_unlabeled/Study1_13_HCropVolume").glob("*.dcm")
    )
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    sops = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    for pacs in orthanc_server(tmp_path / "orthanc"):
        retry = RetryPolicy(attempts=2, backoff_s=0.05, timeout_s=20)
        source = DicomwebSource(pacs.dicomweb_url, Credentials(*pacs.auth), retry=retry)
        assert source.store([f.read_bytes() for f in files]) == len(files)
        monkeypatch.setenv("MEDFLOW_DICOMWEB_USERNAME", pacs.auth[0])
        monkeypatch.setenv("MEDFLOW_DICOMWEB_PASSWORD", pacs.auth[1])
        capsys.readouterr()
        args = ["--dicomweb", pacs.dicomweb_url, "--study", study, "--push", "--json"]
        code = _predict(server, *args)
        out, err = capsys.readouterr()
        assert code == 0, err
        (pushed,) = json.loads(out)["pushed"]
        # one frame per source slice and segment (the untrained model may draw one or both)
        assert pushed["kind"] == "SEG" and pushed["frames"] in (len(files), 2 * len(files))
        (ref,) = source.search(Query(study_uids=(study,), modality="SEG"))
        assert ref.sop_uid == pushed["sop_instance_uid"]
        seg = pydicom.dcmread(io.BytesIO(source.retrieve(ref)))
        referenced = {
            str(i.ReferencedSOPInstanceUID)
            for s in seg.ReferencedSeriesSequence
            for i in s.ReferencedInstanceSequence
        }
        assert str(seg.StudyInstanceUID) == study and referenced == sops
