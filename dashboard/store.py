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
from medflow.core.tasks import DEFAULT_TASK, TaskReview, get_task, mask_review_task
from medflow.dashboard import schema
from medflow.dashboard.config import DEFAULT_URL
from medflow.dashboard.queries import StoreQueries
from medflow.dashboard.records import ACTIONS, ROLES, Prediction, ReviewError, User

__all__ = ["DEFAULT_URL", "ReviewError", "ReviewStore", "file_sha256", "utcnow"]

_STATUS_OF_ACTION = {"accept": "accepted", "reject": "rejected", "correct": "corrected"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    names = set(a) | set(b)
    return 0.5 * sum(abs(a.get(n, 0.0) - b.get(n, 0.0)) for n in names)


class ReviewStore(StoreQueries):
    """Access to the review database. Thread-safe; one instance per process is enough.

    Reading the queue, reviewed labels and the audit log: :class:`StoreQueries`.
    """

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
        task: str | None = None,
    ) -> int:
        """Adds one model prediction to the review queue; returns its id.

        UIDs are the original ones of the file; ``image_ref`` is a path or DICOMweb URL;
        ``scores[i]`` is the probability of ``labels[i]``; ``task`` names the task plug-in
        that reviews it (None: the task whose review judges mask files when ``mask_ref`` is
        given, else the default task).

        Raises:
            ReviewError: labels/scores are empty, of different lengths or not finite, a
                required UID is empty, the task is not installed, or its review judges a mask
                file and ``mask_ref`` is missing.
        """
        _check_prediction(sop_instance_uid, study_instance_uid, series_instance_uid, labels, scores)
        task = _task_of(task, mask_ref, sop_instance_uid)
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
            task=task,
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
            action: "accept" (the prediction is right), "reject" (it is wrong, no label
                given) or "correct" (``label`` is the right one), as the prediction's task
                takes them (:class:`medflow.core.tasks.TaskReview`). When the task's review
                judges a mask file, the file's SHA-256 is recorded with the review.
            label: for "correct": class index or name from the prediction's labels.

        Raises:
            ReviewError: unknown prediction or action, an action the task does not take, a
                missing/unknown label, or a file the action needs that cannot be read.
        """
        if action not in ACTIONS:
            raise ReviewError(f"review action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if not reviewer:
            raise ReviewError("a review needs the reviewer's name")
        pred = self.get_prediction(prediction_id)
        rules = _review_of(pred)
        try:
            label_index = rules.label_index(pred, action, label)
            digest = rules.artifact_digest(pred, action)
        except ReviewError:
            raise
        except InputError as exc:
            raise ReviewError(str(exc)) from exc
        outcome = rules.outcome(pred, action, label_index, digest)
        outcome = f"{outcome}; comment: {comment}" if comment else outcome
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
        with self.engine.begin() as conn:
            review_id = conn.execute(schema.reviews.insert().values(**row)).inserted_primary_key[0]
            if rules.reviews_mask_file:
                masks = schema.review_masks
                conn.execute(masks.insert().values(review_id=review_id, mask_ref=pred.mask_ref,
                                                   mask_sha256=digest))  # fmt: skip
            _set_status(conn, pred.id, _STATUS_OF_ACTION[action])
            _audit(conn, reviewer, action, pred, outcome)
        return int(review_id)

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


def _task_of(task: str | None, mask_ref: str | None, sop: str) -> str:
    """The task of a prediction being recorded (see :meth:`ReviewStore.record_prediction`)."""
    if task is None:
        task = (mask_review_task() if mask_ref else None) or DEFAULT_TASK
    try:
        rules = get_task(task).review()
    except ConfigError as exc:
        raise ReviewError(f"prediction for {sop}: {exc}") from exc
    if rules.reviews_mask_file and not mask_ref:
        raise ReviewError(
            f"prediction for {sop}: a {task} prediction is reviewed by its mask; "
            "pass the mask file as mask_ref"
        )
    return task


def _review_of(pred: Prediction) -> TaskReview:
    """The review plug-in of the prediction's task."""
    try:
        return get_task(pred.task).review()
    except ConfigError as exc:
        raise ReviewError(f"case {pred.id} cannot be reviewed here: {exc}") from exc


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _set_status(conn: sa.Connection, prediction_id: int, status: str) -> None:
    t = schema.predictions
    conn.execute(t.update().where(t.c.id == prediction_id).values(status=status))


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
