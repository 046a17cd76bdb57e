"""Grad-CAM in the exported classifier (issue 21, item 4).

A small CNN (the Trainer's own ``build_model`` and ``fit``) learns a synthetic two-class
case: class 1 images hold a bright square somewhere, class 0 images none. The exported
model's ``explain`` signature must put its heat on the square. Then ``medflow predict
--overlay-out`` writes the PNG overlay and ``.npy`` on the source grid of real DICOM files,
and ``--record`` stores the heat map where the review page's overlay reads it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medflow.cli import main
from tests.integration import test_predict_dicom
from tests.integration.test_serving_helpers import start_server
from tests.support.fixed_transform import FixedTransform

SIZE, SIDE = 28, 7


def squares(n: int, seed: int):
    """(images [n, 28, 28, 1], labels [n], square top-left corners [n, 2])."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 1, (n, SIZE, SIZE, 1)).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.int64)
    corners = rng.integers(0, SIZE - SIDE, (n, 2))
    for i in np.flatnonzero(labels):
        r, c = corners[i]
        images[i, r : r + SIDE, c : c + SIDE] += 3.0
    return images, labels, corners


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The models folder with ``squares/1`` (explain signature) and the trained model."""
    import tensorflow as tf

    from medflow.components.models.hparams import HParams
    from medflow.components.models.training import fit
    from medflow.components.tasks.classification.export import export_serving_model
    from medflow.components.tasks.classification.trust import TrustSettings, fit_outputs

    images, labels, _ = squares(600, seed=0)
    hp = HParams.from_config(
        {"image_size": SIZE, "epochs": 6, "width": 8, "augment": False, "patience": 0}
        | {"learning_rate": 3e-3, "seed": 1, "labels": ["empty", "square"], "batch_size": 16}
    )
    train = tf.data.Dataset.from_tensor_slices((images[:500], labels[:500]))
    val = tf.data.Dataset.from_tensor_slices((images[500:], labels[500:]))
    model, _, _ = fit(hp, train, val)
    # calibration and cut-off on the held-out 100, as the Trainer does on eval
    probs = model.predict(images[500:], verbose=0)
    cal, point, _ = fit_outputs(TrustSettings(bootstrap=0), probs, labels[500:], np.arange(100))
    base = tmp_path_factory.mktemp("models")
    transform = FixedTransform((SIZE, SIZE, 1), 0.0, 1.0)
    export_serving_model(
        model,
        transform,
        str(base / "squares" / "1"),
        hp.input_shape,
        hp.labels,
        {},
        cal,
        point.threshold,
    )
    return base


def test_explain_heat_map_highlights_the_square_that_decides(exported):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported / "squares" / "1"))
    images, labels, corners = squares(60, seed=7)
    explained = loaded.signatures["explain"](image=tf.constant(images))
    served = loaded.signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_array_equal(explained["class_id"], served["class_id"])
    assert float(np.mean(served["class_id"].numpy() == labels)) >= 0.9  # it learned the case
    heat = explained["heatmap"].numpy()
    assert heat.shape == (60, SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1
    inside_share, hits = [], 0
    for i in np.flatnonzero((labels == 1) & (served["class_id"].numpy() == 1)):
        r, c = corners[i]
        box = np.zeros((SIZE, SIZE), bool)
        box[r : r + SIDE, c : c + SIDE] = True
        inside_share.append(heat[i][box].sum() / max(heat[i].sum(), 1e-9))
        pr, pc = np.unravel_index(heat[i].argmax(), heat[i].shape)
        hits += (r - 2 <= pr < r + SIDE + 2) and (c - 2 <= pc < c + SIDE + 2)
    # the square is 49 / 784 = 6% of the image; a map as coarse as the 7 x 7 feature map
    # still puts > 2.5 times that share of its heat there, and its peak on the square
    # (within 2 px) in 9 of 10 images (a uniform map: 6%, and a peak there 1 time in 6)
    assert np.median(inside_share) > 0.15
    assert hits / len(inside_share) >= 0.9


dicoms = test_predict_dicom.dicoms


def test_predict_overlay_out_and_record_write_the_heat_map(exported, dicoms, tmp_path, capsys):
    import pydicom

    from medflow.components.dicom.display import load_overlay
    from medflow.dashboard.store import ReviewStore

    srv = start_server(exported)
    try:
        url = f"sqlite:///{tmp_path}/review.db"
        code = main(
            ["predict", *map(str, dicoms), "--server", f"127.0.0.1:{srv.grpc_port}"]
            + ["--model", "squares", "--overlay-out", str(tmp_path / "maps"), "--json"]
            + ["--record", "--store-url", url]
        )
    finally:
        srv.stop()
    out, err = capsys.readouterr()
    assert code == 0, err
    preds = json.loads(out)["predictions"]
    store = ReviewStore(url)
    try:
        for pred, path in zip(preds, dicoms, strict=True):
            ds = pydicom.dcmread(path)
            stem = f"{ds.SOPInstanceUID}_f0"
            heat = np.load(tmp_path / "maps" / f"{stem}.heatmap.npy")
            assert heat.shape == (ds.Rows, ds.Columns)  # the source grid, not 28 x 28
            assert (tmp_path / "maps" / f"{stem}.png").stat().st_size > 0
            stored = store.get_prediction(pred["review_id"])
            np.testing.assert_allclose(np.load(stored.heatmap_ref), heat)
            assert load_overlay(stored.heatmap_ref, (ds.Rows, ds.Columns)).shape == heat.shape
    finally:
        store.close()
