"""Which autoencoder initialised a model: the Pusher's contract entry (``training_data.init``,
from the Trainer's ``hparams.init`` and the initialising version's own contract; the Models
page shows it: tests/unit/test_dashboard_app.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from medflow.components.models.encoder_init import ENCODER_WEIGHTS, contract_lineage
from tests.support.sample_runs import write_pushed_version


def _pushed_autoencoder(models: Path, version: int) -> Path:
    folder = write_pushed_version(models, version, model="medflow-autoencoder")
    contract = json.loads((folder / "contract.json").read_text())
    contract.update(task="autoencoder", labels=[])
    (folder / "contract.json").write_text(json.dumps(contract))
    (folder / ENCODER_WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
    np.savez(folder / ENCODER_WEIGHTS, **{"000_00": np.ones((3, 3, 1, 4), "float32")})
    return folder


def test_contract_lineage_names_the_initialising_version(tmp_path):
    ae = _pushed_autoencoder(tmp_path / "models", 3)
    digest = hashlib.sha256((ae / ENCODER_WEIGHTS).read_bytes()).hexdigest()
    # the model folder resolves to its newest version, as --hparam init= does
    found = contract_lineage({"hparams": {"init": str(ae.parent)}})
    assert found == {
        "init": {
            "path": str(ae),
            "encoder_sha256": digest,
            "model_name": "medflow-autoencoder",
            "version": "3",
            "task": "autoencoder",
        }
    }
    assert contract_lineage({"hparams": {"init": ""}}) == contract_lineage({}) == {}
    gone = str(tmp_path / "deleted")  # lineage never stops a push: the path alone
    assert contract_lineage({"hparams": {"init": gone}}) == {"init": {"path": gone}}
