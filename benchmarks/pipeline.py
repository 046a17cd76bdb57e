"""Full local pipeline vs a bare Keras script doing the same training and evaluation.

Same data (an npz dataset, default BreastMNIST train+val; val = eval split), same model
code and hyperparameters, one process. The pipeline goes npz -> DICOM -> DicomExampleGen
-> StatisticsGen/SchemaGen/ExampleValidator -> Transform -> Trainer -> TFMA Evaluator ->
Pusher; the bare script loads the npz arrays, z-scores them with the training mean/std,
trains with ``components.models.training.fit`` and computes the eval AUC. Prints
per-component times, the wall-time ratio, and both models' AUC/accuracy on the eval split
and (when the npz has one) on its test split, using the pushed SavedModel for the pipeline.

    .venv/bin/python benchmarks/pipeline.py [--npz PATH] [--epochs N] [--width W] [--hparam K=V]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


def auc(scores, labels) -> float:
    import numpy as np

    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def quality(scores, labels) -> dict[str, float]:
    import numpy as np

    return {"auc": auc(scores, labels), "acc": float(np.mean((scores >= 0.5) == (labels == 1)))}


def bare_keras(npz: Path, hparams: dict) -> tuple[float, dict, object, tuple[float, float]]:
    """Train and evaluate without the pipeline; returns (seconds, eval quality, model, norm)."""
    import tensorflow as tf

    from benchmarks.npz_examples import load_npz_split
    from medflow.components.models.hparams import HParams
    from medflow.components.models.training import fit, split_holdout

    start = time.perf_counter()
    x_tr, y_tr = load_npz_split(npz, "train")
    x_ev, y_ev = load_npz_split(npz, "val")
    mean, std = float(x_tr.mean()), float(x_tr.std())
    hp = HParams.from_config({"image_size": 28, **hparams})
    train = tf.data.Dataset.from_tensor_slices(((x_tr - mean) / std, y_tr))
    # Early stopping on the same holdout of train as the Trainer (never the eval split).
    if hp.validation_fraction > 0:
        train, val = split_holdout(train, hp.validation_fraction)
    else:
        val = tf.data.Dataset.from_tensor_slices(((x_ev - mean) / std, y_ev))
    model, _, _ = fit(hp, train, val)
    scores = model.predict((x_ev - mean) / std, verbose=0)[:, 1]
    return time.perf_counter() - start, quality(scores, y_ev), model, (mean, std)


def pipeline_run(npz: Path, workdir: Path, hparams: dict) -> tuple[float, dict]:
    from medflow.components.ingest.npz_import import import_npz
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    start = time.perf_counter()
    manifest = import_npz(npz, workdir / "data", splits=("train", "val"))
    config = PipelineConfig(
        data_root=str(manifest.parent / "dicom"),
        label_manifest=str(manifest),
        hyperparameters=hparams,
        thresholds={"min_auc": 0.5},
        enable_cache=False,
    )
    summary = run_local(config, workdir=workdir, progress=print)
    return time.perf_counter() - start, summary


def test_split_quality(npz: Path, model_path: str | None, bare_model, norm) -> dict:
    import numpy as np
    import tensorflow as tf

    with np.load(npz) as data:
        if "test_images" not in data:
            return {}
    from benchmarks.npz_examples import load_npz_split

    x, y = load_npz_split(npz, "test")
    out = {"bare": quality(bare_model.predict((x - norm[0]) / norm[1], verbose=0)[:, 1], y)}
    if model_path:
        served = tf.saved_model.load(model_path).signatures["serving_default"]
        out["pipeline"] = quality(served(image=tf.constant(x))["score"].numpy(), y)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", type=Path, default=SHARED / "breastmnist.npz")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument(
        "--hparam",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="more Trainer hyperparameters (JSON values), e.g. learning_rate=0.001",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    hparams = {"epochs": args.epochs, "width": args.width}
    for item in args.hparam:
        key, _, value = item.partition("=")
        hparams[key] = json.loads(value)
    print(f"hyperparameters: {hparams}")
    import tensorflow as tf  # noqa: F401  (import cost outside both timings)

    bare_s, bare_q, bare_model, norm = bare_keras(args.npz, hparams)
    print(f"bare Keras: {bare_s:.1f} s, eval AUC {bare_q['auc']:.3f} ACC {bare_q['acc']:.3f}")
    with tempfile.TemporaryDirectory(prefix="medflow-bench-") as tmp:
        pipe_s, summary = pipeline_run(args.npz, Path(tmp), hparams)
        overall = summary["metrics"].get("overall", {})
        test_q = test_split_quality(args.npz, summary.get("model_path"), bare_model, norm)
    print(f"\n{'component':<32}{'seconds':>10}")
    for name, entry in summary["components"].items():
        print(f"{name:<32}{entry.get('seconds', 0):>10.1f}")
    print(f"{'pipeline total (incl. DICOM import)':<32}{pipe_s:>10.1f}")
    print(f"\npipeline / bare Keras wall time: {pipe_s / bare_s:.2f}x (target <= 3x)")
    print(
        f"eval split: pipeline AUC {overall.get('auc', float('nan')):.3f} "
        f"ACC {overall.get('binary_accuracy', float('nan')):.3f} | bare AUC {bare_q['auc']:.3f} "
        f"ACC {bare_q['acc']:.3f}"
    )
    for who, q in test_q.items():
        print(f"test split ({who}): AUC {q['auc']:.3f} ACC {q['acc']:.3f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "bare_seconds": bare_s,
                    "pipeline_seconds": pipe_s,
                    "ratio": pipe_s / bare_s,
                    "components": summary["components"],
                    "eval": {"pipeline": overall, "bare": bare_q},
                    "test": test_q,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
