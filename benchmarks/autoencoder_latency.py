"""Serving cost of the guard (``benchmarks/autoencoder.py --part latency``).

A classifier (the classification export of a ``small_cnn``, width 16, untrained: the cost is
the same) and its guard (the autoencoder export, small_cnn width 16, untrained) are published
with the Pusher's ``publish_guarded`` and served by the embedded server; ``run_predict``
(what ``medflow predict`` runs) then predicts the same PneumoniaMNIST val DICOM files with
the contract naming the guard and with a copy of the contract without it, alternating,
``--repeats`` times each. Reported: median seconds per run and the ratio.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.autoencoder import DATA, NPZ


def _publish(base: Path, work: Path) -> str:
    """``<base>/xray/<v>`` and ``<base>/xray-guard/<v>``; returns the version folder."""
    import keras

    from medflow.components.models.backbones import build_model
    from medflow.components.models.guard import contract_field, guard_contract, guard_name
    from medflow.components.models.hparams import HParams
    from medflow.components.pusher.executor import static_fields
    from medflow.components.pusher.guarded import publish_guarded
    from medflow.components.tasks.autoencoder.export import export_autoencoder
    from medflow.components.tasks.autoencoder.model import ENCODER, build_autoencoder
    from medflow.components.tasks.autoencoder.trainer import AEHParams
    from medflow.components.tasks.classification.export import export_serving_model
    from tests.support.fixed_transform import FixedTransform

    keras.utils.set_random_seed(0)
    transform = FixedTransform((28, 28, 1), 128.0, 60.0)
    labels = ["normal", "pneumonia"]
    hp = HParams.from_config({"image_size": 28, "labels": labels, "backbone": "small_cnn"})
    export_serving_model(build_model(hp), transform, str(work / "model"), (28, 28, 1), labels, {})
    ae_hp = AEHParams.from_config({"image_size": 28})
    ae, served = build_autoencoder(ae_hp)
    info = {"guard": {"threshold": 0.5, "quantile": 0.99}}
    export_autoencoder(
        served, ae.get_layer(ENCODER), transform, str(work / "guard"), (28, 28, 1), info
    )
    contract = static_fields(
        {"task": "classification", "labels": labels, "pixel_spec": {"size": [28, 28]}}
    )
    contract = replace(
        contract, model_name="xray", guard=contract_field(str(work / "guard"), "xray")
    )
    own = guard_contract(contract, "xray", str(work / "guard"), None)
    _, path, _ = publish_guarded(str(work / "model"), str(base / "xray"), contract,
                                 str(work / "guard"), str(base / guard_name("xray")), own)  # fmt: skip
    return path


def latency_part(args) -> dict:
    from medflow.components.ingest.npz_import import import_npz
    from medflow.workflows.predict import PredictJob, run_predict
    from tests.integration.test_serving_helpers import start_server

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        version = Path(_publish(tmp / "models", tmp))
        plain = tmp / "plain.json"
        doc = json.loads((version / "contract.json").read_text())
        doc.pop("guard")
        plain.write_text(json.dumps(doc))
        manifest = import_npz(
            DATA / NPZ["pneumoniamnist"], tmp / "x", splits=("val",), limit=args.limit
        )
        files = (str(manifest.parent / "dicom"),)
        server = start_server(tmp / "models")
        times: dict[str, list[float]] = {"without": [], "with": []}
        try:
            target = f"127.0.0.1:{server.grpc_port}"
            for _ in range(args.repeats):
                for arm, contract in (("without", str(plain)), ("with", str(version))):
                    job = PredictJob(server=target, model="xray", paths=files, contract=contract)
                    start = time.perf_counter()
                    outcome = run_predict(job)
                    times[arm].append(time.perf_counter() - start)
                    assert len(outcome.results) == args.limit
        finally:
            server.stop()
        shutil.rmtree(tmp / "x", ignore_errors=True)
    median = {arm: float(np.median(t)) for arm, t in times.items()}
    return {"images": args.limit, "repeats": args.repeats, "seconds": times, "median_s": median,
            "ratio": median["with"] / median["without"]}  # fmt: skip
