"""Registration: no registration vs medflow's model on the HC18 and Sunnybrook 2D pairs,
eval-split Dice and HD95 in mm (warped moving mask vs fixed mask), folding, NCC, training seconds and
inference ms per pair, in one process.

HC18 / Sunnybrook -> ``import_hc18`` / ``import_sunnybrook`` (DICOM + pairs.csv) ->
``ingest`` with the pairs manifest (one example per pair through the pipeline's PixelSpec,
split by the fixed image's patient as the importers chose) -> images scaled per image to
[0, 1] (the Transform's ``normalise``) -> ``trainer.fit_arrays`` (the Trainer's loop) ->
``register_arrays`` / ``pair_metrics`` on the eval split (and on the train split, to show
over-fitting). The TFX pipeline (Transform, TFMA Evaluator) is not in the loop here;
``medflow run --task registration`` and ``tests/e2e/test_registration_e2e.py`` run that path.

Not here yet (issue 18): a classical library baseline (SimpleITK / itk-elastix are not
installed in this environment) and the 3D hippocampus pairs.

    .venv/bin/python benchmarks/registration.py [--dataset hc18|sunnybrook|both] [--size 64]
        [--epochs 150] [--hparam KEY=VALUE ...] [--validation]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def _import(dataset: str, out: Path) -> Path:
    if dataset == "hc18":
        from medflow.components.ingest.hc18_import import import_hc18

        import_hc18(DATA / "hc18", out)
    else:
        from medflow.components.ingest.sunnybrook_import import import_sunnybrook

        import_sunnybrook(DATA / "sunnybrook", out)
    return out / "pairs.csv"


def _pairs(split_dir: Path, size: int):
    import tensorflow as tf

    from medflow.components.tasks.registration.trainer import Pairs

    rows: dict[str, list] = {k: [] for k in ("fixed", "moving", "fixed_mask", "moving_mask")}
    has, spacing, patients = [], [], []
    files = sorted(str(p) for p in split_dir.glob("*.gz"))
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        f = tf.train.Example.FromString(record).features.feature
        for k in ("fixed", "moving"):
            a = np.frombuffer(f[k].bytes_list.value[0], "<f4").reshape(size, size, 1)
            rows[k].append((a - a.min()) / max(float(a.max() - a.min()), 1e-6))
        for k in ("fixed_mask", "moving_mask"):
            m = np.frombuffer(f[k].bytes_list.value[0], np.uint8).reshape(size, size, 1)
            rows[k].append((m > 0).astype(np.float32))
        has.append(float(f["has_masks"].int64_list.value[0]))
        spacing.append(list(f["pixel_spacing"].float_list.value) or [1.0, 1.0])
        patients.append(f["patient_id"].bytes_list.value[0].decode())
    arrays = [np.asarray(rows[k], np.float32) for k in rows]
    pairs = Pairs(*arrays, np.asarray(has, np.float32), np.asarray(spacing, np.float64))
    return pairs, np.asarray(patients)


def _hold_out(pairs, patients: np.ndarray, share: float = 1 / 8):
    """(train, validation): the pairs of a random ``share`` of the patients (seed 0) as a
    validation set carved from the training split, for choosing settings without eval."""
    from medflow.components.tasks.registration.trainer import Pairs

    unique = sorted(set(patients))
    chosen = set(np.random.default_rng(0).choice(unique, max(1, int(len(unique) * share)), False))
    val = np.isin(patients, list(chosen))

    def part(mask):
        return Pairs(*(getattr(pairs, f)[mask] for f in Pairs.__dataclass_fields__))

    return part(~val), part(val)


def run(dataset: str, size: int, epochs: int, hparams: dict, validation: bool = False) -> dict:
    from medflow.components.dicom.keys import DeidKey
    from medflow.components.ingest.engine import IngestOptions, ingest
    from medflow.components.ingest.manifest import read_manifest
    from medflow.components.tasks.registration.trainer import (
        RegHParams,
        fit_arrays,
        pair_metrics,
        register_arrays,
    )
    from medflow.core.pixel_spec import PixelSpec

    with tempfile.TemporaryDirectory() as tmp:
        manifest = _import(dataset, Path(tmp) / "import")
        options = IngestOptions(pixel=PixelSpec(size=(size, size)), allow_burned_in=True)
        report = ingest(
            Path(tmp) / "import" / "dicom", Path(tmp) / "ex", DeidKey(b"benchmark-key-0001"),
            read_manifest(manifest), options,
        )  # fmt: skip
        train, patients = _pairs(Path(tmp) / "ex" / "train", size)
        evaluation, _ = _pairs(Path(tmp) / "ex" / "eval", size)
    held_out = None
    if validation:
        train, held_out = _hold_out(train, patients)
    hp = RegHParams.from_config({"image_size": size, "epochs": epochs, **hparams})
    started = time.perf_counter()
    model, _ = fit_arrays(hp, train)
    train_s = time.perf_counter() - started
    register_arrays(model, evaluation)  # warm-up (graph tracing)
    started = time.perf_counter()
    result = register_arrays(model, evaluation)
    infer_ms = 1000 * (time.perf_counter() - started) / max(len(evaluation), 1)
    extra = {"val": pair_metrics(held_out, register_arrays(model, held_out))} if held_out else {}
    return extra | {
        "dataset": dataset,
        "pairs": report.counts["pairs_written"],
        "hparams": hp.to_dict(),
        "train_s": round(train_s, 1),
        "infer_ms_per_pair": round(infer_ms, 2),
        "eval": pair_metrics(evaluation, result),
        "train": pair_metrics(train, register_arrays(model, train)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("hc18", "sunnybrook", "both"), default="both")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="train without 1/8 of the training split's patients and report them as `val` "
        "(choose settings on val, not on eval)",
    )
    args = parser.parse_args()
    hparams = {}
    for item in args.hparam:
        key, _, value = item.partition("=")
        hparams[key] = (
            json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
        )
    hparams.setdefault("learning_rate", 0.005)
    datasets = ("hc18", "sunnybrook") if args.dataset == "both" else (args.dataset,)
    for dataset in datasets:
        result = run(dataset, args.size, args.epochs, hparams, args.validation)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
