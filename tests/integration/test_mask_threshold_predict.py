"""The mask threshold a segmentation Trainer stores is the one ``medflow predict`` applies:
the exported graph serves it, predict cuts the source-grid probabilities at it, and the
DICOM SEG written (read back here) holds exactly those pixels (issue 21)."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pytest

from medflow.cli import main
from medflow.components.dicom.pixels import load_model_input
from medflow.core.pixel_spec import PixelSpec
from tests.integration.test_predict_segmentation import SIZE, _sc, publish_segmenter


def _threshold(model, paths) -> float:
    """A cut-off well away from 0.5 that splits the model's probabilities on ``paths``:
    their median (an untrained U-Net's probabilities sit near 0.5 either way)."""
    spec = PixelSpec(size=SIZE, channels=1)
    arrays = np.stack([load_model_input(p, spec)[0][0] for p in paths])
    probs = np.asarray(model((arrays - 0.5) / 0.25))
    return float(np.round(np.median(probs), 4))


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    import keras

    from medflow.components.tasks.segmentation.unet import build_unet

    folder = tmp_path_factory.mktemp("dicom")
    paths = [_sc(folder / "us1.dcm"), _sc(folder / "us2.dcm", rows=60, cols=40)]
    keras.utils.set_random_seed(5)
    model = build_unet((*SIZE, 1), depth=2, width=4)
    cut = _threshold(model, paths)
    point = {"rule": "dice", "threshold": cut, "dice": 0.5, "split": "eval"}
    base = publish_segmenter(model, tmp_path_factory, cut, operating_point=point)
    return base, paths, cut


@pytest.fixture(scope="module")
def model_base(setting):
    return setting[0]


def test_predict_and_its_seg_use_the_stored_mask_threshold(server, setting, tmp_path, capsys):
    from medflow.components.dicom.dicom_seg_masks import load_segmentation
    from medflow.serving.client import PredictionClient

    _, paths, cut = setting
    assert abs(cut - 0.5) > 1e-3  # the test tells the stored cut-off from 0.5
    argv = ["predict", *map(str, paths), "--server", f"127.0.0.1:{server.grpc_port}"]
    code = main([*argv, "--model", "seg", "--json", "--seg-out", str(tmp_path / "seg")])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    with PredictionClient(f"127.0.0.1:{server.grpc_port}") as client:
        direct, _ = client.predict_dicom(paths, "seg")
    segs = {s["source_series_instance_uid"]: s["path"] for s in doc["segmentations"]}
    for pred, d in zip(doc["predictions"], direct, strict=True):
        assert pred["mask_threshold"] == pytest.approx(cut)
        expected = (d.probabilities >= np.float32(cut)).astype(np.uint8)
        np.testing.assert_array_equal(d.mask, expected)
        assert (expected != (d.probabilities >= 0.5)).any()  # 0.5 would give another mask
        seg = load_segmentation(segs[pred["series_instance_uid"]])
        assert isinstance(seg, hd.seg.Segmentation)
        pixels = seg.get_pixels_by_source_instance([pred["sop_instance_uid"]])[0, ..., 0]
        np.testing.assert_array_equal(pixels, expected)
    code = main([*argv, "--model", "seg"])  # the table shows the cut-off it applied
    out, err = capsys.readouterr()
    assert code == 0, err
    header, _, *rows = out.splitlines()
    assert header.split()[6] == "cut-off"
    assert [float(r.split()[6]) for r in rows[: len(paths)]] == pytest.approx([cut] * 2, abs=1e-4)
