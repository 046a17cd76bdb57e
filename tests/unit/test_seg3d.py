"""3D segmentation pieces: windows cover the volume, the batched sliding window of the
serving graph equals the bare per-patch loop (both halves of a volume see the same model),
foreground-weighted patches, patch training runs, per-label volume metrics, the TFMA
combiner on a volume example."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from medflow.components.tasks.segmentation.metrics3d import spacing_from_affine, volume_values
from medflow.components.tasks.segmentation.windows import (
    gaussian_weights,
    sample_patch,
    sliding_window_numpy,
    sliding_window_tf,
    window_starts,
    windows,
)
from medflow.core import features as F


def test_windows_cover_the_volume_with_overlap():
    assert window_starts(48, 32, 0.5) == [0, 16]
    assert window_starts(64, 32, 0.5) == [0, 16, 32]
    assert window_starts(40, 32, 0.5) == [0, 8]  # the last window ends at the edge
    assert window_starts(16, 32, 0.5) == [0]
    covered = np.zeros((48, 64, 40), bool)
    for z, y, x in windows(covered.shape, (32, 32, 32), 0.5):
        covered[z : z + 32, y : y + 32, x : x + 32] = True
    assert covered.all()
    w = gaussian_weights((8, 8, 8))
    assert w.max() == pytest.approx(1.0) and w.min() > 0 and w[4, 4, 4] > w[0, 0, 0]


def test_serving_sliding_window_equals_the_patch_loop_on_both_halves():
    import keras
    import tensorflow as tf

    from medflow.components.models.unet3d import build_unet3d

    keras.utils.set_random_seed(0)
    model = build_unet3d(3, depth=2, width=4)
    volume = np.random.default_rng(0).random((16, 32, 24, 1), dtype=np.float32)
    patch = (16, 16, 16)
    graph = sliding_window_tf(model, tf.constant(volume[None]), patch).numpy()[0]
    loop = sliding_window_numpy(lambda x: model(x, training=False).numpy(), volume, patch)
    assert graph.shape == (16, 32, 24, 3)
    assert np.allclose(graph, loop, atol=1e-5)
    assert np.allclose(graph.sum(-1), 1.0, atol=1e-5)
    # a window lying wholly in one half: the blend there is that window's own output
    alone = model(volume[None, :, :16, :16], training=False).numpy()[0]
    assert np.allclose(graph[:, :8, :4], alone[:, :8, :4], atol=1e-5)


def test_patches_are_mostly_centred_on_foreground():
    rng = np.random.default_rng(1)
    image = np.zeros((48, 64, 48, 1), np.float32)
    mask = np.zeros((48, 64, 48), np.uint8)
    mask[40:44, 5:9, 40:44] = 2
    hits = [sample_patch(image, mask, (16, 16, 16), rng)[1].any() for _ in range(200)]
    assert 0.6 < np.mean(hits) < 0.9  # 67 % aimed at foreground, a few random ones hit too
    img, m = sample_patch(image, mask, (16, 16, 16), rng, foreground=0.0)
    assert img.shape == (16, 16, 16, 1) and m.shape == (16, 16, 16)


def test_patch_training_runs_and_predicts_every_voxel():
    from medflow.components.tasks.segmentation.volumes import (
        Seg3DHParams,
        fit_volumes,
        predict_volumes,
    )

    rng = np.random.default_rng(2)
    masks = np.zeros((3, 16, 32, 16), np.uint8)
    masks[:, 4:10, 8:20, 4:10] = 1
    masks[:, 4:10, 20:26, 4:10] = 2
    images = (masks[..., None] * 0.4 + rng.normal(0, 0.05, (*masks.shape, 1))).astype(np.float32)
    hp = Seg3DHParams(patch=(16, 16, 16), depth=2, width=4, steps=4, batch_size=2)
    model, summary = fit_volumes(images, masks, 3, hp)
    assert summary["train_volumes"] == 3 and len(summary["history"]["loss"]) >= 1
    probs = predict_volumes(model, images, hp)
    assert probs.shape == (3, 16, 32, 16, 3)
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*depth=8"):
        Seg3DHParams.from_config({"seg3d_patch": 20})


def test_volume_values_per_label_in_mm_and_ml():
    true = np.zeros((10, 10, 10), np.uint8)
    true[2:6, 2:6, 2:6] = 1  # 64 voxels
    true[7:9, 7:9, 7:9] = 2  # 8 voxels
    probs = np.zeros((10, 10, 10, 3), np.float32)
    probs[..., 0] = 1.0
    probs[2:6, 2:6, 2:6] = [0, 1, 0]
    affine = np.diag([2.0, 1.0, 1.0, 1.0])  # 2 mm along the first axis: 2 uL voxels
    values = volume_values(probs, true, spacing_from_affine(affine.reshape(-1)))
    assert values["dice_1"] == 1.0 and values["dice_2"] == 0.0 and values["dice"] == 0.5
    assert values["hausdorff95_mm_1"] == 0.0
    assert values["volume_error_ml_1"] == 0.0
    assert values["volume_error_ml_2"] == pytest.approx(-8 * 2 / 1000)


def test_tfma_combiner_reads_a_volume_example():
    from tensorflow_model_analysis.metrics import metric_types

    from medflow.components.tasks.segmentation.tfma_metrics import _SegmentationCombiner

    true = np.zeros((4, 6, 8), np.uint8)
    true[1:3, 1:4, 2:6] = 1
    probs = np.zeros((1, 4, 6, 8, 2), np.float32)
    probs[..., 0] = 1.0
    probs[0, 1:3, 1:4, 2:6] = [0.2, 0.8]
    element = SimpleNamespace(
        prediction={"probabilities": probs},
        label=np.array([true.tobytes()], dtype=object),
        features={F.VOLUME_AFFINE: np.eye(4).reshape(-1)},
    )
    keys = [metric_types.MetricKey(name=n) for n in ("dice", "dice_1", "volume_error_ml_1")]
    combiner = _SegmentationCombiner(keys, 0.5, F.PIXEL_SPACING)
    acc = combiner.add_input(combiner.create_accumulator(), element)
    out = combiner.extract_output(combiner.merge_accumulators([acc, combiner.create_accumulator()]))
    assert [out[k] for k in keys] == [1.0, 1.0, 0.0]
