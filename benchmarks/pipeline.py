"""Full local pipeline vs a bare Keras script doing the same training and evaluation.

Same data (MedMNIST npz datasets, default BreastMNIST and PneumoniaMNIST; train = train
split, val = eval split), same model code and hyperparameters, one process. The pipeline
goes npz -> DICOM -> DicomExampleGen -> StatisticsGen/SchemaGen/ExampleValidator ->
Transform -> Trainer -> TFMA Evaluator -> Pusher; the bare script loads the npz arrays,
z-scores them with the training mean/std, trains with ``components.models.training.fit``
and scores the val split. Each dataset runs ``--runs`` times (bare, then pipeline); the
medians give the ratio. Printed per dataset: a per-component profile of the median run
(wall, CPU, and where the time goes: Beam pipeline runs, TFX packaging, Keras fit,
SavedModel writes), the import cost of TF/Beam/TFX (paid once per process), and val/test
AUC of both models, computed the same way on the same npz arrays (the pipeline's with its
pushed SavedModel).

    .venv/bin/python benchmarks/pipeline.py [--npz PATH ...] [--runs N] [--epochs N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_NPZ = ("breastmnist.npz", "pneumoniamnist_trainval.npz")
TARGETS = {"breastmnist": 1.5, "pneumoniamnist": 1.2}
IMPORTS = (
    "tensorflow",
    "keras",
    "apache_beam",
    "tensorflow_data_validation",
    "tensorflow_transform",
    "tensorflow_model_analysis",
    "tfx.v1",
)


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


def bare_keras(npz: Path, hparams: dict) -> tuple[float, object]:
    """Train without the pipeline; returns (seconds, scorer of raw images)."""
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
    model.predict((x_ev - mean) / std, verbose=0)  # the evaluation the Evaluator does
    seconds = time.perf_counter() - start
    return seconds, lambda x: model.predict((x - mean) / std, verbose=0)[:, 1]


class Profile:
    """Wall time of selected library calls, attributed to the component running them."""

    HOOKS = (  # (module, attribute path, label)
        ("apache_beam.pipeline", "Pipeline.run", "Beam pipeline runs"),
        ("tfx.utils.dependency_utils", "build_ephemeral_package", "TFX sdist for Beam"),
        ("tfx.components.util.udf_utils", "package_user_module_file", "user-module wheel"),
        ("tfx.components.util.udf_utils", "install_to_temp_directory", "pip install user code"),
        ("keras", "Model.fit", "Keras fit"),
        ("tensorflow", "saved_model.save", "SavedModel writes"),
    )

    def __init__(self) -> None:
        self.current = "(set-up)"
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def progress(self, line: str) -> None:
        print(line)
        if m := re.match(r"\[\d+\] (\S+) \.\.\.", line):
            self.current = m.group(1)

    def _wrap(self, fn, label: str):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[self.current][label] += time.perf_counter() - start

        return timed

    @contextlib.contextmanager
    def hooked(self):
        import importlib

        saved = []
        for module, path, label in self.HOOKS:
            owner = importlib.import_module(module)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, self._wrap(getattr(owner, name), label))
        try:
            yield self
        finally:
            for owner, name, fn in reversed(saved):
                setattr(owner, name, fn)


def pipeline_run(npz: Path, workdir: Path, hparams: dict, profile: Profile) -> dict:
    from medflow.components.ingest.npz_import import import_npz
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    start = time.perf_counter()
    manifest = import_npz(npz, workdir / "data", splits=("train", "val"))
    imported = time.perf_counter() - start
    config = PipelineConfig(
        data_root=str(manifest.parent / "dicom"),
        label_manifest=str(manifest),
        hyperparameters=hparams,
        thresholds={"min_auc": 0.5},
        enable_cache=False,
    )
    with profile.hooked():
        summary = run_local(config, workdir=workdir, progress=profile.progress)
    summary["seconds"] = time.perf_counter() - start
    summary["npz_to_dicom_seconds"] = imported
    summary["profile"] = {k: dict(v) for k, v in profile.seconds.items()}
    return summary


def served_scorer(model_path: str | None):
    import tensorflow as tf

    if not model_path:
        return None
    served = tf.saved_model.load(model_path).signatures["serving_default"]
    return lambda x: served(image=tf.constant(x))["score"].numpy()


def split_quality(npz: Path, scorer) -> dict[str, dict]:
    """AUC/ACC of ``scorer`` on the val and (if present) test split of ``npz``."""
    import numpy as np

    from benchmarks.npz_examples import load_npz_split

    with np.load(npz) as data:
        splits = [s for s in ("val", "test") if f"{s}_images" in data]
    out = {}
    for split in splits:
        x, y = load_npz_split(npz, split)
        out[split] = quality(scorer(x), y)
    return out


def import_costs() -> dict[str, float]:
    """Seconds to import each heavy library, in order, in a fresh process."""
    code = (
        "import importlib, json, sys, time\nout = {}\n"
        "for name in sys.argv[1:]:\n"
        "    t = time.perf_counter(); importlib.import_module(name)\n"
        "    out[name] = time.perf_counter() - t\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *IMPORTS], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_dataset(npz: Path, runs: int, hparams: dict) -> dict:
    results = []
    for run in range(runs):
        print(f"\n=== {npz.name}: run {run + 1}/{runs} ===")
        bare_s, bare_scorer = bare_keras(npz, hparams)
        print(f"bare Keras: {bare_s:.1f} s")
        with tempfile.TemporaryDirectory(prefix="medflow-bench-") as tmp:
            summary = pipeline_run(npz, Path(tmp), hparams, Profile())
            pipe_scorer = served_scorer(summary.get("model_path"))
            quality_ = {"bare": split_quality(npz, bare_scorer)}
            if pipe_scorer:
                quality_["pipeline"] = split_quality(npz, pipe_scorer)
        print(f"pipeline: {summary['seconds']:.1f} s ({summary['seconds'] / bare_s:.2f}x)")
        results.append({"bare_seconds": bare_s, "summary": summary, "quality": quality_})
    return {"npz": str(npz), "runs": results}


def report(result: dict) -> None:
    runs = result["runs"]
    name = Path(result["npz"]).stem.split("_")[0]
    bare = statistics.median(r["bare_seconds"] for r in runs)
    pipe = statistics.median(r["summary"]["seconds"] for r in runs)
    middle = sorted(runs, key=lambda r: r["summary"]["seconds"])[len(runs) // 2]
    summary = middle["summary"]
    print(f"\n##### {name}: {len(runs)} run(s), profile of the median pipeline run")
    print(f"{'component':<30}{'wall s':>8}{'CPU s':>8}  where the time goes")
    for comp, entry in summary["components"].items():
        parts = summary["profile"].get(comp, {})
        where = ", ".join(f"{k} {v:.1f}" for k, v in sorted(parts.items()))
        print(
            f"{comp:<30}{entry.get('seconds', 0):>8.1f}{entry.get('cpu_seconds', 0):>8.1f}  {where}"
        )
    set_up = summary["profile"].get("(set-up)", {})
    other = summary["seconds"] - summary["npz_to_dicom_seconds"]
    other -= sum(e.get("seconds", 0) for e in summary["components"].values())
    print(f"{'npz -> DICOM files':<30}{summary['npz_to_dicom_seconds']:>8.1f}")
    print(f"{'runner set-up + summary':<30}{other:>8.1f}          {dict(set_up) or ''}")
    print(f"{'pipeline total':<30}{summary['seconds']:>8.1f}")
    times = ", ".join(f"{r['bare_seconds']:.1f}/{r['summary']['seconds']:.1f}" for r in runs)
    target = TARGETS.get(name)
    print(f"runs (bare/pipeline s): {times}")
    print(
        f"median: bare {bare:.1f} s, pipeline {pipe:.1f} s -> ratio {pipe / bare:.2f}x"
        + (f" (target <= {target}x)" if target else "")
    )
    for run in runs:
        cells = []
        for who, splits in run["quality"].items():
            cells += [f"{who} {s} AUC {q['auc']:.3f} ACC {q['acc']:.3f}" for s, q in splits.items()]
        tfma = run["summary"]["metrics"].get("overall", {}).get("auc", float("nan"))
        print("  " + " | ".join(cells) + f" | TFMA eval AUC {tfma:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", type=Path, action="append", help="dataset(s); default both")
    parser.add_argument("--runs", type=int, default=3)
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
    imports = import_costs()
    import tensorflow as tf  # noqa: F401  (import cost outside both timings)

    npzs = args.npz or [SHARED / name for name in DEFAULT_NPZ]
    results = [one_dataset(npz, args.runs, hparams) for npz in npzs]
    print("\nimport cost in a fresh process (paid once: LocalDagRunner runs every component")
    print("in one process), seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in imports.items()))
    for result in results:
        report(result)
    if args.json:
        args.json.write_text(json.dumps({"imports": imports, "results": results}, indent=1))


if __name__ == "__main__":
    main()
