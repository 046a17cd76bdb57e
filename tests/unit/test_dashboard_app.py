"""The Streamlit app through streamlit.testing.v1.AppTest: login gate, review session, audit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from medflow.components.ingest.manifest import read_manifest
from medflow.dashboard.app import PAGES
from medflow.dashboard.labels_export import export_labels
from medflow.dashboard.store import ReviewStore
from medflow.workflows.review_samples import seed_store
from tests.support.page_images import page_images, viewer_payloads
from tests.support.sample_runs import PIPELINE, QUARANTINE, write_pushed_version, write_sample_run

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
PASSWORD = "review-pass-1"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/review.db"
    monkeypatch.setenv("MEDFLOW_STORE_URL", url)
    monkeypatch.setenv("MEDFLOW_WORKDIR", str(tmp_path / "workdir"))
    for name in ("MEDFLOW_MLMD_DB", "MEDFLOW_MLMD_CONFIG", "MEDFLOW_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    store = ReviewStore(url)
    store.add_user("alice", PASSWORD, "reviewer")
    store.add_user("root", PASSWORD, "admin")
    ids = seed_store(store, tmp_path / "images", 6)
    yield store, ids
    store.close()


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if page:
        at.query_params["page"] = page
    return at.run()


def _login(at: AppTest, user: str, password: str = PASSWORD) -> AppTest:
    at.text_input(key="login_user").input(user)
    at.text_input(key="login_password").input(password)
    return at.button[0].click().run()


def _is_login_page(at: AppTest) -> bool:
    return [t.value for t in at.title] == ["medflow review: sign in"]


@pytest.mark.parametrize("page", [*PAGES, None])
def test_every_page_requires_login(env, page):
    store, _ = env
    at = _app(page)
    assert _is_login_page(at)
    assert not at.exception
    # Nothing of any page leaks before sign-in: no navigation, tables, images or actions.
    assert len(at.sidebar.radio) == 0 and len(at.dataframe) == 0
    assert [b.label for b in at.button] == ["Sign in"]
    at = _login(at, "alice", "wrong password")
    assert _is_login_page(at) and "Wrong user name or password." in [e.value for e in at.error]
    # A refused visitor saw no case; the failure is audited.
    assert [(r.action, r.actor) for r in store.audit_records()] == [("login_failed", "alice")]


def test_reviewer_cannot_open_audit_admin_can(env):
    store, _ = env
    at = _login(_app("audit"), "alice")
    assert any("for admins" in e.value for e in at.error)
    assert "audit" not in at.sidebar.radio(key="nav_page").options
    assert [t.value for t in at.title] == ["Review queue"]
    at = _login(_app("audit"), "root")
    assert not at.exception and [t.value for t in at.title] == ["Audit log"]
    assert at.sidebar.radio(key="nav_page").value == "audit"
    assert len(at.get("download_button")) == 1


def test_sign_out_returns_to_login(env):
    at = _login(_app(), "alice")
    assert [t.value for t in at.title] == ["Review queue"]
    at.sidebar.button[0].click().run()
    at.run()
    assert _is_login_page(at)


def test_lockout_refuses_the_right_password_and_sessions_are_audited(env):
    store, _ = env
    at = _app()
    for _ in range(5):
        at = _login(at, "alice", "wrong password")
    at = _login(at, "alice")  # the right password, within the lockout
    assert _is_login_page(at)
    [locked] = [e.value for e in at.error]
    assert "locked until" in locked and "UTC; try again after that" in locked
    at = _login(_app(), "root")
    at.sidebar.button[0].click().run()  # sign out
    assert _is_login_page(at.run())
    trail = [(r.action, r.actor) for r in reversed(store.audit_records()) if r.action != "view"]
    assert trail == [
        *[("login_failed", "alice")] * 5,
        ("lockout", "alice"),
        ("login_locked", "alice"),
        ("login", "root"),
        ("logout", "root"),
    ]


def test_review_page_shows_a_conflict_instead_of_saved(env):
    store, _ = env
    at = _login(_app("review"), "alice")
    case = at.selectbox(key="review_case").value
    # bob reviews the same case while alice looks at it.
    bob = store.review(case, action="reject", reviewer="bob", expected_review_id=None)
    at.button(key="review_accept").click().run()
    assert not at.exception and not at.success
    [error] = [e.value for e in at.error]
    assert "Not saved" in error and "reject by bob" in error
    assert store.latest_review(case).id == bob and store.get_prediction(case).status == "rejected"
    [conflict] = store.audit_records(action="conflict")
    assert conflict.actor == "alice" and conflict.prediction_id == case
    # Once shown bob's review, alice may overrule it.
    at.selectbox(key="review_status").set_value("All").run()  # the case is no longer pending
    at.selectbox(key="review_case").set_value(case).run()
    at.button(key="review_accept").click().run()
    assert f"Case {case}: accept saved." in [s.value for s in at.success]


def test_scripted_review_session_audits_every_view_and_action(env, tmp_path):
    store, ids = env
    at = _login(_app("review"), "alice")
    assert not at.exception
    views = 1  # opening the review page opens the first case of the queue
    first = at.selectbox(key="review_case").value
    assert first == store.list_queue(sort="confidence")[0].id
    script = [
        ("accept", None),
        ("correct", None),
        ("reject", None),
        ("next", None),
        ("correct", "c"),
    ]
    actions = 0
    done: dict[int, str] = {}
    for step, comment in script:
        case = at.selectbox(key="review_case").value
        if step == "next":
            at.button(key="review_next").click().run()
            views += 1
            continue
        if comment:
            at.text_input(key="review_comment").input(comment)
        at.button(key=f"review_{step}").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        done[case] = step
        actions += 1
        views += 1  # the action moves on to the next case, which is a new view
    [login] = store.audit_records(action="login")
    assert login.actor == "alice" and login.prediction_id is None
    records = [r for r in store.audit_records() if r.prediction_id is not None]
    assert len(records) == actions + views
    assert sum(r.action == "view" for r in records) == views
    assert sorted(r.action for r in records if r.action != "view") == sorted(done.values())
    for r in records:
        assert r.actor == "alice" and r.at and r.outcome
        assert r.sop_instance_uid and r.study_instance_uid and r.series_instance_uid
        assert (r.model_name, r.model_version) == ("cxr", "1")
        assert r.prediction_id in ids
    assert store.count(status="pending") == len(ids) - actions
    # Corrections and acceptances become the next run's labels; rejections do not.
    out = tmp_path / "labels" / "manifest.csv"
    assert export_labels(store, out) == sum(a != "reject" for a in done.values())
    rows = {r["SOPInstanceUID"]: r for r in csv.DictReader(out.open())}
    for case, action in done.items():
        pred = store.get_prediction(case)
        if action == "reject":
            assert pred.sop_instance_uid not in rows
            continue
        row = rows[pred.sop_instance_uid]
        flipped = 1 - pred.predicted_index  # binary: the only other label
        assert int(row["label"]) == (pred.predicted_index if action == "accept" else flipped)
        assert row["_reviewer"] == "alice" and row["_model_name"] == "cxr"
    assert "c" in {r["_comment"] for r in rows.values()}
    # The next ingestion run accepts the file: one label column keyed by SOP Instance UID.
    manifest = read_manifest(out)
    assert manifest.key_column == "SOPInstanceUID" and manifest.label_columns == ["label"]
    assert {k: v["label"] for k, v in manifest.rows.items()} == {
        k: int(r["label"]) for k, r in rows.items()
    }


def test_viewer_controls_on_a_multiframe_case(env):
    store, _ = env
    multi = next(p for p in store.list_queue(status="all") if p.image_ref.endswith("img0.dcm"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["case"] = str(multi.id)
    at = _login(at.run(), "alice")
    assert at.selectbox(key="review_case").value == multi.id
    assert at.slider(key=f"frame_{multi.id}").max == 2
    [data] = viewer_payloads(at)
    # The viewer windows in the browser: it gets the frame's values and the presets.
    assert "CT lung" in [name for name, _, _ in data["presets"]] and data["grey"]
    at.slider(key=f"frame_{multi.id}").set_value(2).run()
    at.slider(key="review_opacity").set_value(0.8).run()
    assert not at.exception and len(page_images(at)) == 1
    assert "frame 3/3" in viewer_payloads(at)[0]["caption"]
    assert len(at.image) == 0  # never through /media/, served without a session
    # Changing viewer settings is not a new view of the case.
    assert sum(r.action == "view" for r in store.audit_records()) == 1


RUN1 = "2025-03-01T08:00:00.000000"
RUN2 = "2025-03-02T08:00:00.000000"


@pytest.fixture()
def workdir(env, tmp_path):
    root = tmp_path / "workdir"
    dest = write_pushed_version(root / "models", 4)
    write_sample_run(
        root / "metadata" / f"{PIPELINE}.sqlite",
        root / "pipelines",
        run_id=RUN1,
        pushed_destination=dest,
        pushed_version=4,
    )
    return root


def _texts(at: AppTest) -> str:
    parts = [m.value for kind in ("markdown", "caption", "info", "success", "warning", "error")
             for m in at.get(kind)]  # fmt: skip
    return "\n".join(str(p) for p in parts)


def test_runs_page_shows_a_run_from_ml_metadata(workdir):
    at = _login(_app("runs"), "alice")
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Pipeline runs"]
    assert at.selectbox(key="runs_run").options == [f"{PIPELINE} · {RUN1}"]
    runs, components, artifacts, *rest = (d.value for d in at.dataframe)
    assert list(runs["run"]) == [RUN1] and "COMPLETE" in runs["state"][0]
    assert list(components["component"]) == [
        "DicomExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Trainer",
        "Evaluator", "Pusher",
    ]  # fmt: skip
    assert (components["duration (s)"] > 0).all()
    report_uri = artifacts.loc[artifacts["type"] == "medflow.IngestReport", "uri"].item()
    assert report_uri.startswith(str(workdir / "pipelines"))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {
        "inputs": "25", "written": "20", "quarantined": "3", "duplicates": "2", "examples": "20",
    }  # fmt: skip
    reasons, _files, anomalies = rest
    assert dict(zip(reasons["reason"], reasons["files"], strict=True)) == QUARANTINE
    assert reasons["meaning"].str.len().min() > 0
    assert list(anomalies["feature"]) == ["img_max"] and list(anomalies["split"]) == ["eval"]


def test_runs_page_picks_up_a_new_run(workdir):
    at = _login(_app("runs"), "alice")
    assert len(at.selectbox(key="runs_run").options) == 1
    write_sample_run(
        workdir / "metadata" / f"{PIPELINE}.sqlite", workdir / "pipelines", run_id=RUN2,
        fail_trainer=True,
    )  # fmt: skip
    at.run()
    assert not at.exception
    options = at.selectbox(key="runs_run").options
    assert options == [f"{PIPELINE} · {RUN2}", f"{PIPELINE} · {RUN1}"]
    at.selectbox(key="runs_run").set_value(options[0]).run()
    assert any("failed in Trainer" in e.value for e in at.error)


def test_runs_page_reads_a_configured_store(workdir, tmp_path, monkeypatch):
    # The production path (MySQL / gRPC config file) with a config that any machine can open.
    config = tmp_path / "mlmd.pbtxt"
    db = workdir / "metadata" / f"{PIPELINE}.sqlite"
    config.write_text(f'sqlite {{ filename_uri: "{db}" connection_mode: READONLY }}')
    monkeypatch.setenv("MEDFLOW_WORKDIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("MEDFLOW_MLMD_CONFIG", str(config))
    monkeypatch.setenv("MEDFLOW_MODELS_DIR", str(workdir / "models"))
    at = _login(_app("runs"), "alice")
    assert not at.exception
    assert at.selectbox(key="runs_run").options == [f"{PIPELINE} · {RUN1}"]
    assert str(config) in at.caption[0].value
    at.sidebar.radio(key="nav_page").set_value("models").run()
    assert not at.exception
    assert any(f"Blessed by the Evaluator in run {RUN1}" in s.value for s in at.success)


def test_runs_page_without_metadata_says_so(env, tmp_path):
    at = _login(_app("runs"), "alice")
    assert not at.exception
    [info] = at.info
    assert "No pipeline runs yet" in info.value and str(tmp_path / "workdir") in info.value


def test_models_page_shows_a_pushed_version(workdir):
    at = _login(_app("models"), "alice")
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Models"]
    assert at.selectbox(key="models_name").value == "medflow-classifier"
    assert at.selectbox(key="models_version").value == 4
    versions = at.dataframe[0].value
    assert list(versions["version"]) == [4] and versions["auc"][0] == pytest.approx(0.91)
    assert {m.label: m.value for m in at.metric}["auc"] == "0.910"
    text = _texts(at)
    assert "medflow-classifier v4" in [h.value for h in at.subheader]
    assert "Research and clinical decision support only." in text
    assert any(f"Blessed by the Evaluator in run {RUN1}" in s.value for s in at.success)
    assert "No TFMA results at" in text  # the sample evaluation has no TFMA files
    # A newer push appears without restarting the app.
    write_pushed_version(workdir / "models", 5)
    at.run()
    assert at.dataframe[0].value["version"].tolist() == [5, 4]


def test_models_page_shows_which_autoencoder_initialised_the_model(workdir):
    import json

    contract_file = workdir / "models" / "medflow-classifier" / "4" / "contract.json"
    contract = json.loads(contract_file.read_text())
    init = {"model_name": "medflow-autoencoder", "version": "2", "task": "autoencoder",
            "path": "/m/medflow-autoencoder/2", "encoder_sha256": "ab12" * 16}  # fmt: skip
    contract["training_data"]["init"] = init  # what the Pusher writes (encoder_init)
    contract_file.write_text(json.dumps(contract))
    at = _login(_app("models"), "alice")
    assert not at.exception, at.exception
    assert (
        "**Backbone initialised from** medflow-autoencoder v2 (autoencoder) at "
        "`/m/medflow-autoencoder/2`, encoder SHA-256 ab12ab12ab12" in _texts(at)
    )


def test_models_page_before_any_push(env):
    at = _login(_app("models"), "alice")
    assert not at.exception
    [info] = at.info
    assert "No model has been pushed yet" in info.value
