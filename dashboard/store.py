"""The review store: predictions to review, review actions, the audit log and local users.

SQLAlchemy 2 Core on SQLite by default (``sqlite:///.medflow/review.db``); a PostgreSQL
URL (``postgresql+psycopg://...``) works the same. The schema is migrated on open
(:mod:`dashboard.schema`). The audit log is append-only: this class has no method to
change or remove a record, and the database refuses UPDATE/DELETE on it (triggers).

Example:
    store = ReviewStore("sqlite:///review.db")
    pid = store.record_prediction(sop_instance_uid="1.2.3", ..., labels=["normal", "pneumonia"],
                                  scores=[0.2, 0.8])
    store.record_view(pid, actor="alice")
    store.review(pid, action="correct", reviewer="alice", label="normal", comment="artefact")
"""

from __future__ import annotations

import functools
import hashlib
import math
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from medflow.core.errors import ConfigError, InputError, ServiceError
from medflow.dashboard import schema
from medflow.dashboard.config import DEFAULT_URL
from medflow.dashboard.records import (
    ACTIONS,
    ROLES,
    SORT_KEYS,
    STATUSES,
    AuditRecord,
    Prediction,
    ReviewedLabel,
    User,
)

_STATUS_OF_ACTION = {"accept": "accepted", "reject": "rejected", "correct": "corrected"}


class ReviewError(InputError):
    """A review action or prediction that cannot be recorded (unknown case, bad label...)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    names = set(a) | set(b)
    return 0.5 * sum(abs(a.get(n, 0.0) - b.get(n, 0.0)) for n in names)


class ReviewStore:
    """Access to the review database. Thread-safe; one instance per process is enough."""

    def __init__(self, url: str = DEFAULT_URL):
        self.url = url
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(f"review store URL {url!r} is not a database URL: {exc}") from exc
        kwargs: dict = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Streamlit reruns scripts on other threads than the one that opened the store.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        try:
            self.engine = sa.create_engine(url, **kwargs)
            self.schema_version = schema.migrate(self.engine, utcnow)
        except sa.exc.OperationalError as exc:
            raise ServiceError(f"cannot open the review store {url!r}: {exc.orig}") from exc
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from exc

    def close(self) -> None:
        """Releases pooled connections."""
        self.engine.dispose()

    # --- predictions -------------------------------------------------------------------

    def record_prediction(
        self,
        *,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        image_ref: str,
        model_name: str,
        model_version: str,
        labels: list[str],
        scores: list[float],
        frame_index: int = 0,
        mask_ref: str | None = None,
        heatmap_ref: str | None = None,
    ) -> int:
        """Adds one model prediction to the review queue; returns its id.

        UIDs are the original ones of the file; ``image_ref`` is a path or DICOMweb URL;
        ``scores[i]`` is the probability of ``labels[i]``.

        Raises:
            ReviewError: labels/scores are empty, of different lengths or not finite, or a
                required UID is empty.
        """
        _check_prediction(sop_instance_uid, study_instance_uid, series_instance_uid, labels, scores)
        scores = [float(s) for s in scores]
        best = max(range(len(scores)), key=scores.__getitem__)
        row = dict(
            sop_instance_uid=sop_instance_uid,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            frame_index=int(frame_index),
            image_ref=str(image_ref),
            mask_ref=None if mask_ref is None else str(mask_ref),
            heatmap_ref=None if heatmap_ref is None else str(heatmap_ref),
            model_name=model_name,
            model_version=str(model_version),
            labels=list(map(str, labels)),
            scores=scores,
            predicted_index=best,
            confidence=scores[best],
            disagreement=0.0,
            status="pending",
            created_at=utcnow(),
        )
        with self.engine.begin() as conn:
            new_id = conn.execute(schema.predictions.insert().values(**row)).inserted_primary_key[0]
            self._update_disagreement(conn, sop_instance_uid, int(frame_index))
        return int(new_id)

    def _update_disagreement(self, conn: sa.Connection, sop_uid: str, frame: int) -> None:
        t = schema.predictions
        rows = conn.execute(
            sa.select(t.c.id, t.c.model_name, t.c.labels, t.c.scores).where(
                t.c.sop_instance_uid == sop_uid, t.c.frame_index == frame
            )
        ).all()
        dists = {r.id: dict(zip(r.labels, r.scores, strict=True)) for r in rows}
        for r in rows:
            others = (d for other_id, d in dists.items() if other_id != r.id)
            value = max((_total_variation(dists[r.id], d) for d in others), default=0.0)
            conn.execute(t.update().where(t.c.id == r.id).values(disagreement=value))

    def get_prediction(self, prediction_id: int) -> Prediction:
        """Returns one prediction. Raises ReviewError when there is none with this id."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(schema.predictions).where(schema.predictions.c.id == prediction_id)
            ).first()
        if row is None:
            raise ReviewError(f"no prediction with id {prediction_id} in the review store")
        return _prediction(row)

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
        order = [column.desc() if descending else column.asc(), t.c.id.asc()]
        query = self._filtered(sa.select(t), status, model_name).order_by(*order)
        query = query.offset(offset).limit(limit)
        with self.engine.connect() as conn:
            return [_prediction(r) for r in conn.execute(query)]

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

    # --- views, reviews and the audit log -----------------------------------------------

    def record_view(self, prediction_id: int, *, actor: str) -> int:
        """Writes the audit record of ``actor`` opening a case; returns the record id."""
        pred = self.get_prediction(prediction_id)
        with self.engine.begin() as conn:
            return _audit(conn, actor, "view", pred, "viewed")

    def review(
        self,
        prediction_id: int,
        *,
        action: str,
        reviewer: str,
        label: int | str | None = None,
        comment: str = "",
    ) -> int:
        """Records a review action and its audit record in one transaction; returns the review id.

        Args:
            action: "accept" (the predicted label is right), "reject" (it is wrong, no label
                given) or "correct" (``label`` is the right one). A segmentation prediction
                (one with a ``mask_ref``) takes "accept" (the mask is right) or "reject"; the
                SHA-256 of the mask file is recorded with the review.
            label: for "correct": class index or name from the prediction's labels.

        Raises:
            ReviewError: unknown prediction or action, a missing/unknown label, "correct" on
                a segmentation prediction, or accepting a mask whose file is missing.
        """
        if action not in ACTIONS:
            raise ReviewError(f"review action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if not reviewer:
            raise ReviewError("a review needs the reviewer's name")
        pred = self.get_prediction(prediction_id)
        label_index = _label_for(pred, action, label)
        digest = _mask_digest(pred, action)
        row = dict(
            prediction_id=pred.id,
            action=action,
            label_index=label_index,
            comment=comment or "",
            reviewer=reviewer,
            model_name=pred.model_name,
            model_version=pred.model_version,
            created_at=utcnow(),
        )
        outcome = _outcome(pred, action, label_index, comment, digest)
        with self.engine.begin() as conn:
            review_id = conn.execute(schema.reviews.insert().values(**row)).inserted_primary_key[0]
            if pred.is_segmentation:
                conn.execute(
                    schema.review_masks.insert().values(
                        review_id=review_id, mask_ref=pred.mask_ref, mask_sha256=digest
                    )
                )
            conn.execute(
                schema.predictions.update()
                .where(schema.predictions.c.id == pred.id)
                .values(status=_STATUS_OF_ACTION[action])
            )
            _audit(conn, reviewer, action, pred, outcome)
        return int(review_id)

    def reviewed_labels(self, *, model_name: str | None = None) -> list[ReviewedLabel]:
        """The latest accept/correct review of each prediction, oldest first.

        A prediction whose latest action is "reject" gives no label; an accepted
        segmentation prediction carries its mask file and the file's SHA-256 at review time.
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
        return [
            ReviewedLabel(
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
                reviewed_at=_utc(row.created_at),
                comment=row.comment,
                mask_ref=row.mask_ref,
                mask_sha256=row.mask_sha256,
            )
            for row in rows
        ]

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
                AuditRecord(**{**row._asdict(), "at": _utc(row.at)}) for row in conn.execute(query)
            ]

    # --- users --------------------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str) -> User:
        """Creates or replaces a local user (bcrypt-hashed password)."""
        import bcrypt

        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not username or not username.strip() or username != username.strip():
            raise InputError("user name must be non-empty without surrounding spaces")
        raw = password.encode("utf-8")
        if len(raw) < 8 or len(raw) > 72:
            raise InputError("password must be 8 to 72 bytes long (bcrypt's limit)")
        hashed = bcrypt.hashpw(raw, bcrypt.gensalt()).decode("ascii")
        t = schema.users
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.username == username))
            conn.execute(
                t.insert().values(
                    username=username, password_hash=hashed, role=role, created_at=utcnow()
                )
            )
        return User(username=username, role=role)

    def authenticate(self, username: str, password: str) -> User | None:
        """Returns the user when the password matches, else None."""
        import bcrypt

        t = schema.users
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.username == username)).first()
        raw = password.encode("utf-8")[:72]
        if row is None:
            # Same work as a real check, so timing does not reveal which names exist.
            bcrypt.checkpw(raw, _dummy_hash())
            return None
        if not bcrypt.checkpw(raw, row.password_hash.encode("ascii")):
            return None
        return User(username=row.username, role=row.role)

    def get_user(self, username: str) -> User | None:
        t = schema.users
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.username, t.c.role).where(t.c.username == username)
            ).first()
        return None if row is None else User(username=row.username, role=row.role)

    def list_users(self) -> list[User]:
        t = schema.users
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.username, t.c.role).order_by(t.c.username)).all()
        return [User(username=r.username, role=r.role) for r in rows]


@functools.cache
def _dummy_hash() -> bytes:
    import bcrypt

    return bcrypt.hashpw(b"not a password", bcrypt.gensalt())


def _check_prediction(sop: str, study: str, series: str, labels: list, scores: list) -> None:
    for name, value in (
        ("sop_instance_uid", sop),
        ("study_instance_uid", study),
        ("series_instance_uid", series),
    ):
        if not value:
            raise ReviewError(f"prediction field {name} is empty; pass the file's original UID")
    if not labels or len(labels) != len(scores):
        raise ReviewError(
            f"prediction for {sop}: labels ({len(labels)}) and scores ({len(scores)}) must be "
            "non-empty lists of the same length"
        )
    if not all(math.isfinite(float(s)) for s in scores):
        raise ReviewError(f"prediction for {sop}: scores must be finite numbers, got {scores}")


def _prediction(row: sa.Row) -> Prediction:
    data = row._asdict()
    data["labels"] = list(data["labels"])
    data["scores"] = [float(s) for s in data["scores"]]
    data["created_at"] = _utc(data["created_at"])
    return Prediction(**data)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mask_digest(pred: Prediction, action: str) -> str | None:
    """SHA-256 of a segmentation prediction's mask file (None: not one, or a missing file
    being rejected)."""
    if not pred.is_segmentation:
        return None
    try:
        return file_sha256(pred.mask_ref)
    except OSError as exc:
        if action == "reject":
            return None
        raise ReviewError(
            f"cannot accept case {pred.id}: its mask {pred.mask_ref} cannot be read "
            f"({exc.strerror or exc}); reject it or restore the file"
        ) from exc


def _label_for(pred: Prediction, action: str, label: int | str | None) -> int | None:
    if pred.is_segmentation and action == "correct":
        raise ReviewError(
            f"case {pred.id} is a segmentation prediction: accept or reject its mask "
            "(correcting a mask by drawing is not supported)"
        )
    if action == "accept":
        return pred.predicted_index
    if action == "reject":
        return None
    if label is None:
        raise ReviewError(f"correcting case {pred.id} needs a label (one of {pred.labels})")
    if isinstance(label, str) and label in pred.labels:
        index = pred.labels.index(label)
    elif isinstance(label, int) and 0 <= label < len(pred.labels):
        index = label
    else:
        raise ReviewError(f"label {label!r} is not one of case {pred.id}'s labels {pred.labels}")
    if index == pred.predicted_index:
        raise ReviewError(
            f"case {pred.id}: {pred.labels[index]!r} is what the model predicted; "
            "use accept, or pick a different label to correct"
        )
    return index


def _outcome(
    pred: Prediction, action: str, label_index: int | None, comment: str, digest: str | None
) -> str:
    said = f"{pred.predicted_label} ({pred.confidence:.3f})"
    if pred.is_segmentation:
        said = f"mask {pred.mask_ref} (sha256 {digest[:16] if digest else 'n/a: file missing'})"
    text = {
        "accept": f"accepted {said}",
        "reject": f"rejected {said}",
        "correct": f"corrected {said} -> {pred.labels[label_index] if label_index is not None else ''}",
    }[action]
    return f"{text}; comment: {comment}" if comment else text


def _audit(conn: sa.Connection, actor: str, action: str, pred: Prediction, outcome: str) -> int:
    row = dict(
        at=utcnow(),
        actor=actor,
        action=action,
        prediction_id=pred.id,
        study_instance_uid=pred.study_instance_uid,
        series_instance_uid=pred.series_instance_uid,
        sop_instance_uid=pred.sop_instance_uid,
        model_name=pred.model_name,
        model_version=pred.model_version,
        outcome=outcome,
    )
    return int(conn.execute(schema.audit_log.insert().values(**row)).inserted_primary_key[0])
