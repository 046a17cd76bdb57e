"""Review store: predictions, queue ordering, reviews, append-only audit log, users, migrations."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from medflow.core.errors import InputError
from medflow.dashboard import schema
from medflow.dashboard.store import ReviewError, ReviewStore

LABELS = ["normal", "pneumonia"]


def _add(store: ReviewStore, n: int, *, model="cxr", version="1", scores=None, frame=0) -> int:
    return store.record_prediction(
        sop_instance_uid=f"1.2.826.0.1.{n}",
        study_instance_uid="1.2.826.0.9",
        series_instance_uid="1.2.826.0.9.1",
        image_ref=f"/data/{n}.dcm",
        model_name=model,
        model_version=version,
        labels=LABELS,
        scores=scores or [0.3, 0.7],
        frame_index=frame,
    )


@pytest.fixture()
def store(tmp_path) -> ReviewStore:
    s = ReviewStore(f"sqlite:///{tmp_path}/sub/review.db")
    yield s
    s.close()


def test_record_and_read_back(store):
    pid = _add(store, 1, scores=[0.9, 0.1])
    pred = store.get_prediction(pid)
    assert pred.sop_instance_uid == "1.2.826.0.1.1"
    assert pred.labels == LABELS and pred.scores == [0.9, 0.1]
    assert pred.predicted_label == "normal" and pred.confidence == pytest.approx(0.9)
    assert pred.status == "pending" and pred.created_at.tzinfo is not None


def test_queue_sorts_by_confidence_and_disagreement(store):
    a = _add(store, 1, scores=[0.05, 0.95])
    b = _add(store, 2, scores=[0.45, 0.55])
    c = _add(store, 3, scores=[0.2, 0.8])
    # A second model disagrees strongly on image 3: TV distance |0.8 - 0.1| = 0.7.
    d = _add(store, 3, model="cxr2", scores=[0.9, 0.1])
    assert [p.id for p in store.list_queue(sort="confidence")] == [b, c, d, a]
    by_dis = store.list_queue(sort="disagreement", descending=True)
    assert [p.id for p in by_dis[:2]] == [c, d]
    assert by_dis[0].disagreement == pytest.approx(0.7)
    assert store.get_prediction(a).disagreement == 0.0
    assert [p.id for p in store.list_queue(model_name="cxr2")] == [d]


def test_reviews_change_status_and_write_audit(store):
    p1, p2, p3 = (_add(store, i) for i in range(3))
    store.record_view(p1, actor="alice")
    store.review(p1, action="accept", reviewer="alice")
    store.review(p2, action="correct", reviewer="bob", label="normal", comment="line artefact")
    store.review(p3, action="reject", reviewer="bob")
    assert store.count(status="pending") == 0
    assert store.count(status="corrected") == 1
    records = store.audit_records()
    assert [r.action for r in records] == ["reject", "correct", "accept", "view"]
    corr = records[1]
    assert corr.actor == "bob" and corr.sop_instance_uid == "1.2.826.0.1.1"
    assert corr.study_instance_uid == "1.2.826.0.9" and corr.series_instance_uid == "1.2.826.0.9.1"
    assert (corr.model_name, corr.model_version) == ("cxr", "1")
    assert "pneumonia" in corr.outcome and "normal" in corr.outcome and "artefact" in corr.outcome
    labels = store.reviewed_labels()
    assert [(x.prediction_id, x.label_index) for x in labels] == [(p1, 1), (p2, 0)]


def test_latest_review_wins(store):
    pid = _add(store, 1)
    store.review(pid, action="correct", reviewer="a", label=0)
    store.review(pid, action="reject", reviewer="b")
    assert store.reviewed_labels() == []
    store.review(pid, action="accept", reviewer="c")
    [only] = store.reviewed_labels()
    assert (only.label_index, only.reviewer, only.action) == (1, "c", "accept")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "delete"}, "review action must be one of"),
        ({"action": "correct"}, "needs a label"),
        ({"action": "correct", "label": "cat"}, "not one of"),
        ({"action": "correct", "label": 5}, "not one of"),
        ({"action": "correct", "label": "pneumonia"}, "use accept"),
    ],
)
def test_bad_review_is_refused_and_nothing_written(store, kwargs, message):
    pid = _add(store, 1)
    with pytest.raises(ReviewError, match=message):
        store.review(pid, reviewer="alice", **kwargs)
    assert store.audit_records() == [] and store.count(status="pending") == 1


def test_bad_prediction_is_refused(store):
    with pytest.raises(ReviewError, match="same length"):
        _add(store, 1, scores=[1.0])
    with pytest.raises(ReviewError, match="no prediction with id 99"):
        store.record_view(99, actor="x")


def test_audit_log_is_append_only_in_the_database(store):
    store.record_view(_add(store, 1), actor="alice")
    with store.engine.connect() as conn:
        for sql in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                conn.exec_driver_sql(sql)
    assert [r.actor for r in store.audit_records()] == ["alice"]
    assert not any(hasattr(store, n) for n in ("delete_audit", "update_audit"))


def test_users_and_passwords(store):
    store.add_user("alice", "correct horse", "admin")
    assert store.authenticate("alice", "correct horse").role == "admin"
    assert store.authenticate("alice", "wrong horse!") is None
    assert store.authenticate("nobody", "correct horse") is None
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(schema.users.c.password_hash)).scalar()
    assert stored.startswith("$2") and "horse" not in stored
    with pytest.raises(InputError, match="role must be one of"):
        store.add_user("bob", "long enough", "root")
    with pytest.raises(InputError, match="at least 12 characters"):
        store.add_user("bob", "short", "reviewer")


def test_migrations_are_versioned_and_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path}/r.db"
    first = ReviewStore(url)
    pid = _add(first, 1)
    first.close()
    again = ReviewStore(url)  # reopening applies nothing new and keeps the data
    assert again.schema_version == schema.LATEST_VERSION
    assert again.get_prediction(pid).sop_instance_uid == "1.2.826.0.1.1"
    with again.engine.connect() as conn:
        versions = conn.execute(sa.select(schema.schema_version.c.version)).scalars().all()
    assert versions == list(range(1, schema.LATEST_VERSION + 1))


def test_partial_schema_is_upgraded(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/old.db")
    with engine.begin() as conn:  # a database left at version 1 by an older medflow
        schema.schema_version.create(conn)
        schema.MIGRATIONS[0](conn)
        conn.execute(schema.schema_version.insert().values(version=1, applied_at=sa.func.now()))
    store = ReviewStore(f"sqlite:///{tmp_path}/old.db")
    assert store.schema_version == schema.LATEST_VERSION
    store.record_view(_add(store, 1), actor="a")
    assert len(store.audit_records()) == 1


def test_version_4_database_gets_the_task_of_each_prediction(tmp_path):
    """Version 5 adds predictions.task: rows with a mask belong to the task whose review
    judges mask files, the others to the default task."""
    from medflow.core.tasks import DEFAULT_TASK, get_task

    engine = sa.create_engine(f"sqlite:///{tmp_path}/v4.db")
    with engine.begin() as conn:  # a database left at version 4 by an older medflow
        schema.schema_version.create(conn)
        for version, migration in enumerate(schema.MIGRATIONS[:4], start=1):
            migration(conn)
            conn.execute(
                schema.schema_version.insert().values(version=version, applied_at=sa.func.now())
            )
        assert "task" not in {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
        for n, mask in ((1, None), (2, "/masks/2.png"), (3, None)):
            conn.exec_driver_sql(
                "INSERT INTO predictions (sop_instance_uid, study_instance_uid, "
                "series_instance_uid, frame_index, image_ref, mask_ref, model_name, model_version, "
                "labels, scores, predicted_index, confidence, disagreement, status, created_at) "
                "VALUES (?, '1.2', '1.2.3', 0, ?, ?, 'm', '1', '[\"a\", \"b\"]', '[0.3, 0.7]', 1, "
                "0.7, 0.0, 'pending', '2024-05-01 10:00:00')",
                (f"1.2.3.{n}", f"/data/{n}.dcm", mask),
            )
    engine.dispose()
    store = ReviewStore(f"sqlite:///{tmp_path}/v4.db")
    try:
        assert store.schema_version == schema.LATEST_VERSION == 7  # 7: the guard's columns
        tasks = {p.sop_instance_uid: p.task for p in store.list_queue(status="all")}
        assert tasks == {
            "1.2.3.1": DEFAULT_TASK,
            "1.2.3.2": "segmentation",
            "1.2.3.3": DEFAULT_TASK,
        }
        assert get_task("segmentation").review().reviews_mask_file
        assert not get_task(DEFAULT_TASK).review().reviews_mask_file
        # The backfilled cases are reviewed by their task's rules.
        masked = next(p.id for p in store.list_queue(status="all") if p.mask_ref)
        with pytest.raises(ReviewError, match="needs the corrected mask file"):
            store.review(masked, action="correct", reviewer="a", label="a")
        with store.engine.connect() as conn:
            added = [c["name"] for c in sa.inspect(conn).get_columns("predictions")][-3:]
            assert added == ["task", "ood_score", "in_distribution"]
    finally:
        store.close()


def test_recorded_predictions_carry_a_known_task(store):
    assert store.get_prediction(_add(store, 1)).task == "classification"
    masked = store.record_prediction(
        sop_instance_uid="1.2.3", study_instance_uid="1.2", series_instance_uid="1.2.4",
        image_ref="/data/x.dcm", model_name="unet", model_version="1", labels=["bg", "fg"],
        scores=[0.4, 0.6], mask_ref="/masks/x.png",
    )  # fmt: skip
    assert store.get_prediction(masked).task == "segmentation"  # no task: the one for masks
    common = dict(
        sop_instance_uid="1.2.5", study_instance_uid="1.2", series_instance_uid="1.2.4",
        image_ref="/data/y.dcm", model_name="m", model_version="1", labels=LABELS,
        scores=[0.4, 0.6],
    )  # fmt: skip
    with pytest.raises(ReviewError, match="task 'tractography' is not installed"):
        store.record_prediction(**common, task="tractography")
    with pytest.raises(ReviewError, match="reviewed by its mask; pass the mask file"):
        store.record_prediction(**common, task="segmentation")
    assert store.count() == 2
