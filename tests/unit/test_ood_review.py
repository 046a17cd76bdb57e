"""The review store keeps the guard's decision: ``medflow predict --record`` stores each
result's ``ood_score`` and ``in_distribution``, and the queue lists out-of-distribution cases
first whatever the chosen order; a store of schema 6 gains the columns."""

from __future__ import annotations

from types import SimpleNamespace

import sqlalchemy as sa

from medflow.dashboard.store import ReviewStore


def _result(sop: str, p: float):
    return SimpleNamespace(
        sop_instance_uid=sop, study_instance_uid="1.2", series_instance_uid="1.3",
        path=f"/data/{sop}.dcm", model_name="xray", model_version=3, frame_index=0,
        task="classification", labels=["normal", "pneumonia"], probabilities=[1 - p, p],
        class_id=int(p >= 0.5), heatmap_ref=None,
    )  # fmt: skip


def test_recorded_guard_decisions_sort_flagged_cases_first(tmp_path):
    from medflow.dashboard.views.review import ood_flag
    from medflow.workflows.predict import record

    url = f"sqlite:///{tmp_path / 'review.db'}"
    results = [_result("1.4.1", 0.55), _result("1.4.2", 0.99), _result("1.4.3", 0.97)]
    verdicts = {"ood_score": [0.1, 3.2, None], "in_distribution": [True, False, None]}
    ids = record(results, url, verdicts)
    store = ReviewStore(url)
    try:
        queue = store.list_queue(sort="confidence")  # least confident first, after the flagged
        assert [p.id for p in queue] == [ids[1], ids[0], ids[2]]
        flagged = queue[0]
        assert flagged.in_distribution is False and flagged.ood_score == 3.2
        assert ood_flag(flagged) and not ood_flag(queue[1]) and not ood_flag(queue[2])
        assert queue[2].in_distribution is None and queue[2].ood_score is None
        assert [p.id for p in store.list_queue(sort="created", descending=True)][0] == ids[1]
    finally:
        store.close()


def test_a_schema_6_store_gains_the_guard_columns(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from medflow.dashboard import schema

    def now():
        return datetime.now(timezone.utc)

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with monkeypatch.context() as m:  # the store as medflow left it before the guard
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:6])
        m.setattr(schema, "LATEST_VERSION", 6)
        assert schema.migrate(engine, now) == 6
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
    assert "in_distribution" not in columns
    assert schema.migrate(engine, now) == 7
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
    assert {"ood_score", "in_distribution"} <= columns
