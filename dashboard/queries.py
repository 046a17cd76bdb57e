"""Read side of the review store: the queue, reviewed labels and the audit log.

:class:`StoreQueries` is a part of :class:`medflow.dashboard.store.ReviewStore`; it reads
through the store's ``engine`` and returns plain records (:mod:`medflow.dashboard.records`).
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from medflow.dashboard import schema
from medflow.dashboard.records import (
    SORT_KEYS,
    STATUSES,
    AuditRecord,
    Prediction,
    Review,
    ReviewedLabel,
    ReviewError,
)


def utc(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def prediction_from_row(row: sa.Row) -> Prediction:
    data = row._asdict()
    data["labels"] = list(data["labels"])
    data["scores"] = [float(s) for s in data["scores"]]
    data["created_at"] = utc(data["created_at"])
    return Prediction(**data)


def review_from_row(row: sa.Row) -> Review:
    return Review(
        id=row.id,
        prediction_id=row.prediction_id,
        action=row.action,
        label_index=row.label_index,
        comment=row.comment,
        reviewer=row.reviewer,
        created_at=utc(row.created_at),
    )


def latest_review_in(conn: sa.Connection, prediction_id: int) -> Review | None:
    r = schema.reviews
    query = sa.select(r).where(r.c.prediction_id == prediction_id)
    row = conn.execute(query.order_by(r.c.id.desc()).limit(1)).first()
    return None if row is None else review_from_row(row)


class StoreQueries:
    """Queries of the review store (a base of ``ReviewStore``)."""

    engine: sa.Engine

    def get_prediction(self, prediction_id: int) -> Prediction:
        """Returns one prediction. Raises ReviewError when there is none with this id."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(schema.predictions).where(schema.predictions.c.id == prediction_id)
            ).first()
        if row is None:
            raise ReviewError(f"no prediction with id {prediction_id} in the review store")
        return prediction_from_row(row)

    def latest_review(self, prediction_id: int) -> Review | None:
        """The case's latest review (None: not reviewed yet): the state a reviewer is shown,
        and passes back to ``ReviewStore.review(expected_review_id=...)``."""
        with self.engine.connect() as conn:
            return latest_review_in(conn, prediction_id)

    def list_queue(
        self,
        *,
        sort: str = "confidence",
        descending: bool = False,
        status: str = "pending",
        model_name: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Prediction]:
        """Predictions for the review queue.

        Args:
            sort: "confidence" (ascending = least sure first), "disagreement" or "created".
            descending: reverse the order (e.g. most disagreement first).
            status: "pending", "reviewed" (any action taken), "all", or one of
                "accepted" / "rejected" / "corrected".
            model_name: only this model's predictions.
            limit: at most this many rows; offset: skip this many first.
        """
        if sort not in SORT_KEYS:
            raise ReviewError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
        t = schema.predictions
        column = {"confidence": t.c.confidence, "disagreement": t.c.disagreement}.get(
            sort, t.c.created_at
        )
        flagged_first = sa.case((t.c.in_distribution.is_(False), 0), else_=1)  # out of distribution
        order = [flagged_first, column.desc() if descending else column.asc(), t.c.id.asc()]
        query = self._filtered(sa.select(t), status, model_name).order_by(*order)
        query = query.offset(offset).limit(limit)
        with self.engine.connect() as conn:
            return [prediction_from_row(r) for r in conn.execute(query)]

    def count(self, *, status: str = "all", model_name: str | None = None) -> int:
        """Number of predictions with this status (see :meth:`list_queue`)."""
        query = self._filtered(
            sa.select(sa.func.count()).select_from(schema.predictions), status, model_name
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    @staticmethod
    def _filtered(query: sa.Select, status: str, model_name: str | None) -> sa.Select:
        t = schema.predictions
        if status not in STATUSES:
            raise ReviewError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        if status == "reviewed":
            query = query.where(t.c.status != "pending")
        elif status != "all":
            query = query.where(t.c.status == status)
        if model_name:
            query = query.where(t.c.model_name == model_name)
        return query

    def model_names(self) -> list[str]:
        """Names of the models with predictions in the store."""
        t = schema.predictions
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(t.c.model_name).distinct().order_by(t.c.model_name)
                ).scalars()
            )

    def reviewed_labels(self, *, model_name: str | None = None) -> list[ReviewedLabel]:
        """The latest accept/correct review of each prediction, oldest first.

        A prediction whose latest action is "reject" gives no label; an accepted prediction
        whose task's review judges a mask file carries the file and its SHA-256 at review time.
        """
        p, r, m = schema.predictions, schema.reviews, schema.review_masks
        latest = sa.select(sa.func.max(r.c.id)).group_by(r.c.prediction_id).scalar_subquery()
        query = (
            sa.select(
                r,
                p.c.sop_instance_uid,
                p.c.series_instance_uid,
                p.c.study_instance_uid,
                p.c.frame_index,
                p.c.labels,
                p.c.task,
                m.c.mask_ref,
                m.c.mask_sha256,
            )
            .join(p, p.c.id == r.c.prediction_id)
            .outerjoin(m, m.c.review_id == r.c.id)
            .where(r.c.id.in_(latest), r.c.action.in_(("accept", "correct")))
            .order_by(r.c.created_at, r.c.id)
        )
        if model_name:
            query = query.where(p.c.model_name == model_name)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_reviewed_label(row) for row in rows]

    def audit_records(
        self, *, limit: int | None = None, actor: str | None = None, action: str | None = None
    ) -> list[AuditRecord]:
        """Audit records, newest first, optionally filtered by actor and action."""
        t = schema.audit_log
        query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if actor:
            query = query.where(t.c.actor == actor)
        if action:
            query = query.where(t.c.action == action)
        with self.engine.connect() as conn:
            return [
                AuditRecord(**{**row._asdict(), "at": utc(row.at)}) for row in conn.execute(query)
            ]


def _reviewed_label(row: sa.Row) -> ReviewedLabel:
    return ReviewedLabel(
        prediction_id=row.prediction_id,
        sop_instance_uid=row.sop_instance_uid,
        series_instance_uid=row.series_instance_uid,
        study_instance_uid=row.study_instance_uid,
        frame_index=row.frame_index,
        label_index=row.label_index,
        labels=list(row.labels),
        action=row.action,
        reviewer=row.reviewer,
        model_name=row.model_name,
        model_version=row.model_version,
        reviewed_at=utc(row.created_at),
        comment=row.comment,
        task=row.task,
        mask_ref=row.mask_ref,
        mask_sha256=row.mask_sha256,
    )
