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
import json

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
        assert int(row["label"]) == int(data[f"{row['_npz_split']}_labels"][int(row["_npz_index"])])
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
    contract = {"model_name": "cls3d", "task": "classification", "labels": ["normal", "mass"]}
    publish(str(export), str(base / "cls3d"), contract)
    srv = start_server(base)
    yield srv, net, out
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

    srv, net, out = served
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
