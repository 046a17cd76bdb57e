"""Which autoencoder initialised a model: the Pusher's contract entry (``training_data.init``,
from the Trainer's ``hparams.init`` and the initialising version's own contract) and the
dashboard's Models page showing it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from medflow.components.models.encoder_init import ENCODER_WEIGHTS, contract_lineage
from medflow.dashboard.store import ReviewStore
from tests.support.sample_runs import write_pushed_version

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
PASSWORD = "review-pass-1"


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


def test_models_page_shows_which_autoencoder_initialised_the_model(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/review.db"
    monkeypatch.setenv("MEDFLOW_STORE_URL", url)
    monkeypatch.setenv("MEDFLOW_WORKDIR", str(tmp_path / "workdir"))
    for name in ("MEDFLOW_MLMD_DB", "MEDFLOW_MLMD_CONFIG", "MEDFLOW_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    store = ReviewStore(url)
    store.add_user("alice", PASSWORD, "reviewer")
    models = tmp_path / "workdir" / "models"
    ae = _pushed_autoencoder(models, 2)
    folder = write_pushed_version(models, 4)
    contract = json.loads((folder / "contract.json").read_text())
    contract["training_data"] |= contract_lineage({"hparams": {"init": str(ae)}})
    (folder / "contract.json").write_text(json.dumps(contract))

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["page"] = "models"
    at.run()
    at.text_input(key="login_user").input("alice")
    at.text_input(key="login_password").input(PASSWORD)
    at = at.button[0].click().run()
    at.selectbox(key="models_name").select("medflow-classifier").run()
    assert not at.exception, at.exception
    text = "\n".join(str(m.value) for m in at.markdown)
    sha = contract["training_data"]["init"]["encoder_sha256"][:12]
    expected = (
        f"**Backbone initialised from** medflow-autoencoder v2 (autoencoder) at `{ae}`, "
        f"encoder SHA-256 {sha}"
    )
    assert expected in text
    # the autoencoder's own page has no such line
    at.selectbox(key="models_name").select("medflow-autoencoder").run()
    assert "Backbone initialised from" not in "\n".join(str(m.value) for m in at.markdown)
    store.close()
