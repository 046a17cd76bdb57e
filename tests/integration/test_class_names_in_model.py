"""Class names travel inside the exported classification model (issue 24, item 2).

The model is exported with the classification task's own head
(:func:`classification_head`), served by the embedded server, and predicted with
``medflow predict`` without a contract: the names come from the model's ``classes`` output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medflow.components.tasks.classification.export import classification_head
from tests.integration import test_predict_dicom
from tests.integration.test_serving_helpers import start_server

NAMES = ("normal", "pneumonia")


def export_named_model(base, name: str = "chest", labels=NAMES, size: int = 28):
    """``<base>/<name>/1``: a linear model behind the real classification head."""
    import tensorflow as tf

    head = classification_head(labels)
    rng = np.random.default_rng(0)

    class Module(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(rng.normal(0, 0.01, (size * size, len(labels))).astype("f4"))

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32, "image")])
        def serve(self, image):
            flat = tf.reshape(image, [-1, size * size])
            flat = (flat - tf.reduce_mean(flat, 1, keepdims=True)) / 100.0
            return head(tf.nn.softmax(tf.matmul(flat, self.w)))

    module = Module()
    path = base / name / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_head_outputs_names_of_the_predicted_class():
    import tensorflow as tf

    out = classification_head(("a", "b", "c"))(tf.constant([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]]))
    assert [x.decode() for x in out["class_name"].numpy()] == ["b", "a"]
    assert out["classes"].numpy().tolist() == [[b"a", b"b", b"c"]] * 2
    assert out["class_id"].numpy().tolist() == [1, 0]


def test_head_refuses_duplicate_or_single_names():
    with pytest.raises(ValueError, match="all different"):
        classification_head(("a", "a"))
    with pytest.raises(ValueError, match="at least 2"):
        classification_head(("a",))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    export_named_model(base)
    srv = start_server(base)
    yield srv
    srv.stop()


# pydicom's CT and MR copied per test, and `medflow predict` in-process, as in test_predict_dicom
dicoms = test_predict_dicom.dicoms
_predict = test_predict_dicom._predict


def test_predict_prints_the_models_class_names_without_a_contract(server, dicoms, capsys):
    code, out, err = _predict(
        capsys, *dicoms, "--server", f"127.0.0.1:{server.grpc_port}", "--model", "chest"
    )
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[2:]]
    assert len(rows) == 2
    assert {row[2] for row in rows} <= set(NAMES)
    assert "class_0" not in out and "class_1" not in out


def test_record_stores_the_models_class_names(server, dicoms, tmp_path, capsys):
    from medflow.dashboard.store import ReviewStore

    url = f"sqlite:///{tmp_path}/review.db"
    args = ("--server", f"127.0.0.1:{server.grpc_port}", "--model", "chest", "--json")
    code, out, err = _predict(capsys, *dicoms, *args, "--record", "--store-url", url)
    assert code == 0, err
    preds = json.loads(out)["predictions"]
    assert all(p["labels"] == list(NAMES) and p["label"] in NAMES for p in preds)
    store = ReviewStore(url)
    try:
        assert [store.get_prediction(p["review_id"]).labels for p in preds] == [list(NAMES)] * 2
    finally:
        store.close()
