"""3D classification on real AdrenalMNIST3D cases, outside the TFX runner but through every
real piece it calls: ``medflow import-npz`` on the (N, D, H, W) file (one Enhanced
multi-frame DICOM per case), ``medflow ingest`` of the volume folder (labelled volume
examples), the classification task's volume export (an untrained 3D CNN behind the
classification head, :func:`components.models.export.save_with_transform`; training is the
e2e's), the Pusher's ``publish``, the embedded
server and ``medflow predict --json`` on the DICOM volumes. Only the Transform graph is
stood in for by what the real one does with volume examples (the grid bytes pass through).
The whole pipeline (``medflow run``) on a subset is in tests/e2e/test_cls3d_e2e.py (slow)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medflow.cli import main
from tests.integration.test_seg3d_predict import PassThrough
from tests.integration.test_serving_helpers import start_server

PER_SPLIT = 6
GRID = (28, 28, 28)


@pytest.fixture(scope="module")
def imported(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("adrenal")
    npz = shared_data / "adrenalmnist3d_trainval.npz"
    assert main(["import-npz", str(npz), "--out", str(out), "--limit", str(PER_SPLIT)]) == 0
    return npz, out


def test_import_writes_one_multiframe_volume_per_case(imported):
    from medflow.components.dicom.volume import assemble_multiframe

    npz, out = imported
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert len(rows) == 2 * PER_SPLIT and {r["split"] for r in rows} == {"train", "eval"}
    data = np.load(npz)
    for row in rows[:3] + rows[-2:]:
        ds = pydicom.dcmread(out / row["path"])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.1" and int(ds.NumberOfFrames) == 28
        vol = assemble_multiframe(out / row["path"])
        original = data[f"{row['_npz_split']}_images"][int(row["_npz_index"])]
        # slices in the order of their positions along z: the npz case's first axis
        z = vol.slice_positions()[:, 2]
        assert np.array_equal(vol.voxels[np.argsort(z)], original)
        label = data[f"{row['_npz_split']}_labels"][int(row["_npz_index"])]  # shape (1,)
        assert int(row["label"]) == label.item()  # NumPy 2.5: int() of a 1-d array is an error
    spec = json.loads((out / "volume_spec.json").read_text())
    assert spec["size"] == list(GRID)


def test_a_2d_and_3d_shape_mix_is_refused(tmp_path):
    bad = tmp_path / "mixed.npz"
    np.savez(
        bad,
        train_images=np.zeros((2, 8, 8, 8), np.uint8),
        train_labels=np.zeros((2, 1), np.int64),
        val_images=np.zeros((2, 6, 8, 8), np.uint8),
        val_labels=np.zeros((2, 1), np.int64),
    )
    assert main(["import-npz", str(bad), "--out", str(tmp_path / "out")]) != 0
    assert not (tmp_path / "out" / "labels.csv").exists()


@pytest.fixture(scope="module")
def served(imported, tmp_path_factory):
    import keras

    from medflow.components.models.cnn3d import build_cnn3d
    from medflow.components.models.export import save_with_transform
    from medflow.components.models.volume_examples import GridModel
    from medflow.components.pusher.publish import publish
    from medflow.components.tasks.classification.export import classification_head
    from medflow.core.contract import ModelContract

    _, out = imported
    work = tmp_path_factory.mktemp("work")
    key = work / "deid.key"
    assert main(["deid-key", "--out", str(key)]) == 0
    labels = str(out / "labels.csv")
    assert main(["ingest", str(out), "--labels", labels, "--out", str(work / "ex"), "--deid-key-file", str(key)]) == 0  # fmt: skip
    images, labels = _examples(next((work / "ex").glob("*train*/*.gz")))
    assert images.shape == (PER_SPLIT, *GRID, 1) and 0.0 <= images.min() <= images.max() <= 1.0
    assert sorted(labels.tolist()) == sorted(int(r["label"]) for r in _rows(out, "train"))
    keras.utils.set_random_seed(3)
    net = build_cnn3d((*GRID, 1), 2, width=4, stages=2)  # untrained: training is the e2e's
    export = tmp_path_factory.mktemp("export") / "serving"
    head = classification_head(["normal", "mass"])
    save_with_transform(
        GridModel(net, (*GRID, 1)), PassThrough(), str(export), (*GRID, 1), head, {}
    )
    base = tmp_path_factory.mktemp("models")
    contract = dataclasses.replace(  # as the Pusher writes it from the Trainer's summary
        ModelContract.from_dict(
            {"model_name": "cls3d", "task": "classification", "labels": ["normal", "mass"]}
        ),
        volume_spec=json.loads((out / "volume_spec.json").read_text()),
    )
    publish(str(export), str(base / "cls3d"), contract)
    srv = start_server(base)
    yield srv, net, out, base
    srv.stop()


def _rows(out, split):
    return [r for r in csv.DictReader((out / "labels.csv").open()) if r["split"] == split]


def _examples(shard):
    import tensorflow as tf

    images, labels = [], []
    for raw in tf.data.TFRecordDataset(str(shard), compression_type="GZIP"):
        ex = tf.train.Example.FromString(raw.numpy()).features.feature
        shape = list(ex["image_shape"].int64_list.value)
        images.append(np.frombuffer(ex["image"].bytes_list.value[0], "<f4").reshape(shape))
        labels.append(int(ex["label"].int64_list.value[0]))
    return np.stack(images), np.asarray(labels)


def test_predict_json_on_dicom_volumes(served, capsys):
    from medflow.components.dicom.volume import assemble_multiframe
    from medflow.components.ingest.npz_volumes import volume_spec
    from medflow.components.ingest.volume_spec import prepare

    srv, net, out, _ = served
    capsys.readouterr()
    folder = out / "volumes" / "val"
    args = ["predict", str(folder), "--server", f"127.0.0.1:{srv.grpc_port}", "--model", "cls3d"]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    results = sorted(doc["predictions"], key=lambda r: r["path"])
    files = sorted(folder.glob("*.dcm"))
    assert [r["path"] for r in results] == [str(f) for f in files]
    for result, path in zip(results, files, strict=True):
        assert result["label"] in ("normal", "mass")
        assert result["sop_instance_uid"] == str(pydicom.dcmread(path).SOPInstanceUID)
        # the served answer is the network's on the grid ingestion writes for this file
        vol = assemble_multiframe(path)
        grid = prepare(vol.voxels, vol.affine, volume_spec(GRID)).image[None, ..., None]
        expected = np.asarray(net(grid, training=False))[0]
        assert np.allclose(result["probabilities"], expected, atol=1e-5)


def _nifti(path, voxels, spacing):
    from medflow.components.ingest.nifti import save_nifti

    save_nifti(path, voxels, np.diag([*spacing, 1.0]))
    return path


def test_predict_resamples_to_the_training_spacing_and_refuses_what_does_not_fit(
    served, shared_data, tmp_path, capsys
):
    """The contract's volume_spec (1 mm, 28^3): a case written at 0.5 mm (each voxel
    repeated) is resampled back to 1 mm and answered like the 1 mm case; a volume larger
    than the grid at 1 mm is refused with its file named, the others still predicted."""
    srv, _, out, base = served
    case = np.load(shared_data / "adrenalmnist3d_trainval.npz")["val_images"][0].astype(np.float32)
    fine = np.repeat(np.repeat(np.repeat(case, 2, 0), 2, 1), 2, 2)
    folder = tmp_path / "in"
    folder.mkdir()
    _nifti(folder / "a_1mm.nii.gz", case, (1.0, 1.0, 1.0))
    _nifti(folder / "b_05mm.nii.gz", fine, (0.5, 0.5, 0.5))
    _nifti(folder / "c_big.nii.gz", np.zeros((40, 28, 28), np.float32), (1.0, 1.0, 1.0))
    capsys.readouterr()
    args = ["predict", str(folder), "--server", f"127.0.0.1:{srv.grpc_port}", "--model", "cls3d"]
    assert main([*args, "--model-base", str(base), "--json"]) == 1  # one input refused
    doc = json.loads(capsys.readouterr().out)
    by_name = {Path(r["path"]).name: r["probabilities"] for r in doc["predictions"]}
    assert set(by_name) == {"a_1mm.nii.gz", "b_05mm.nii.gz"}
    # linear resampling of a 2x-repeated volume gives the 1 mm voxels back exactly
    assert np.allclose(by_name["a_1mm.nii.gz"], by_name["b_05mm.nii.gz"], atol=1e-5)
    (rejected,) = doc["rejected"]
    assert (
        "c_big.nii.gz" in rejected["message"]
        and "do not fit the model grid 28x28x28" in (rejected["message"])
    )


def test_a_contract_grid_that_differs_from_the_served_one_is_refused():
    from medflow.core.contract import ModelContract
    from medflow.core.errors import ConfigError
    from medflow.workflows.predict_volumes import training_spec

    contract = ModelContract(volume_spec={"spacing": [1.0, 1.0, 1.0], "size": [32, 32, 32]})
    contract.validate()
    assert training_spec(ModelContract(), GRID, "m") is None  # no spec: own spacing
    with pytest.raises(ConfigError, match=r"grid \[32, 32, 32\] differs from the served"):
        training_spec(contract, GRID, "m")
    with pytest.raises(ConfigError, match="volume_spec"):
        ModelContract(volume_spec={"spacing": [0, 1, 1], "size": [8, 8, 8]}).validate()
