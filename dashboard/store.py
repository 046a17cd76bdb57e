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
    seen = store.latest_review(pid)  # the state the reviewer was shown (None: pending)
    store.review(pid, action="correct", reviewer="alice", label="normal", comment="artefact",
                 expected_review_id=seen.id if seen else None)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import sqlalchemy as sa

from medflow.core.errors import ConfigError, InputError, ServiceError
from medflow.core.tasks import DEFAULT_TASK, TaskReview, get_task, mask_review_task
from medflow.dashboard import schema
from medflow.dashboard.config import DEFAULT_URL
from medflow.dashboard.events import utcnow
from medflow.dashboard.queries import StoreQueries, latest_review_in
from medflow.dashboard.records import (
    ACTIONS,
    ANY_STATE,
    CONFLICT,
    AccountLocked,
    AnyState,
    Prediction,
    Review,
    ReviewConflict,
    ReviewError,
)
from medflow.dashboard.security import prepare_sqlite_file
from medflow.dashboard.sessions import StoreSessions
from medflow.dashboard.users import StoreUsers

__all__ = [
    "ANY_STATE",
    "DEFAULT_URL",
    "AccountLocked",
    "ReviewConflict",
    "ReviewError",
    "ReviewStore",
    "file_sha256",
    "utcnow",
]

_STATUS_OF_ACTION = {"accept": "accepted", "reject": "rejected", "correct": "corrected"}


def _total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    names = set(a) | set(b)
    return 0.5 * sum(abs(a.get(n, 0.0) - b.get(n, 0.0)) for n in names)


class ReviewStore(StoreQueries, StoreUsers, StoreSessions):
    """Access to the review database. Thread-safe; one instance per process is enough.

    Reading the queue, reviewed labels and the audit log: :class:`StoreQueries`; users,
    sign-ins and security events: :class:`StoreUsers`; signed browser sessions:
    :class:`StoreSessions`.
    """

    def __init__(self, url: str = DEFAULT_URL):
        self.url = url
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(f"review store URL {url!r} is not a database URL: {exc}") from exc
        kwargs: dict = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
                prepare_sqlite_file(parsed.database)  # 0600 file, 0700 folders (security.py)
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
        predicted_index: int | None = None,
        ood_score: float | None = None,
        in_distribution: bool | None = None,
    ) -> int:
        """Adds one model prediction to the review queue; returns its id.

        UIDs are the original ones of the file; ``image_ref`` is a path or DICOMweb URL;
        ``scores[i]`` is the probability of ``labels[i]``; ``task`` names the task plug-in
        that reviews it (None: the task whose review judges mask files when ``mask_ref`` is
        given, else the default task). ``predicted_index`` is the label the model decided
        (e.g. at its operating point's cut-off); None: the highest score. ``ood_score`` and
        ``in_distribution`` are the model's out-of-distribution guard's (None: no guard).

        Raises:
            ReviewError: labels/scores are empty, of different lengths or not finite, a
                required UID is empty, the task is not installed, or its review judges a mask
                file and ``mask_ref`` is missing.
        """
        _check_prediction(sop_instance_uid, study_instance_uid, series_instance_uid, labels, scores)
        task = _task_of(task, mask_ref, sop_instance_uid)
        scores = [float(s) for s in scores]
        best = _decided_index(scores, predicted_index)
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
            ood_score=None if ood_score is None else float(ood_score),
            in_distribution=None if in_distribution is None else bool(in_distribution),
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
        expected_review_id: int | None | AnyState = ANY_STATE,
        mask_ref: str | Path | None = None,
    ) -> int:
        """Records a review action and its audit record in one transaction; returns the review id.

        Args:
            action: "accept" (the prediction is right), "reject" (it is wrong, no label
                given) or "correct" (``label`` is the right one), as the prediction's task
                takes them (:class:`medflow.core.tasks.TaskReview`). When the task's review
                judges a mask file, the file's SHA-256 is recorded with the review.
            label: for "correct": class index or name from the prediction's labels.
            expected_review_id: the state the reviewer saw: the id of the case's latest
                review then (:meth:`latest_review`), None for a case not reviewed yet.
                ``ANY_STATE`` (the default, for scripts) saves whatever the state.
            mask_ref: the corrected mask file, for "correct" on a case reviewed by its mask:
                the review records and hashes it, and the labels export gives it.

        Raises:
            ReviewConflict: the case's latest review is not ``expected_review_id`` (another
                review was saved meanwhile); nothing is saved but a "conflict" audit record.
            ReviewError: unknown prediction or action, an action the task does not take, a
                missing/unknown label, or a file the action needs that cannot be read.
        """
        if action not in ACTIONS:
            raise ReviewError(f"review action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if not reviewer:
            raise ReviewError("a review needs the reviewer's name")
        pred = _judged(self.get_prediction(prediction_id), action, mask_ref)
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
        with self.engine.begin() as conn:
            # Write first: it takes the database's write lock (the row's, on PostgreSQL), so
            # the state checked below cannot change before this transaction commits.
            _set_status(conn, pred.id, None)
            latest = latest_review_in(conn, pred.id)
            conflict = _conflict(pred, action, reviewer, expected_review_id, latest)
            if conflict is not None:
                _audit(conn, reviewer, CONFLICT, pred, f"{conflict}; refused: {outcome}")
            else:
                review_id = _insert_review(conn, pred, rules, action, reviewer, label_index,
                                           comment, digest)  # fmt: skip
                _set_status(conn, pred.id, _STATUS_OF_ACTION[action])
                _audit(conn, reviewer, action, pred, outcome)
        if conflict is not None:
            raise ReviewConflict(conflict, latest)
        return review_id


def _judged(pred: Prediction, action: str, mask_ref: str | Path | None) -> Prediction:
    """The prediction as the review judges it: with the corrected mask file, if one is given."""
    judges_masks = _review_of(pred).reviews_mask_file
    if mask_ref is None:
        if action == "correct" and judges_masks:
            raise ReviewError(
                f"correcting the mask of case {pred.id} needs the corrected mask file "
                "(mask_ref); draw it with Correct mask on the review page"
            )
        return pred
    if action != "correct" or not judges_masks:
        raise ReviewError(
            f"case {pred.id}: a corrected mask file goes with the correct action of a case "
            f"reviewed by its mask, not with {action!r} on a {pred.task} case"
        )
    return dataclasses.replace(pred, mask_ref=str(mask_ref))


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


def _decided_index(scores: list[float], predicted_index: int | None) -> int:
    """The label the model decided: ``predicted_index`` (checked), else the highest score."""
    if predicted_index is None:
        return max(range(len(scores)), key=scores.__getitem__)
    if not 0 <= int(predicted_index) < len(scores):
        raise ReviewError(
            f"predicted_index {predicted_index} is not one of the {len(scores)} labels"
        )
    return int(predicted_index)


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


def _set_status(conn: sa.Connection, prediction_id: int, status: str | None) -> None:
    """Sets the case's status (None: rewrites the one it has, to take the write lock)."""
    t = schema.predictions
    value = t.c.status if status is None else status
    conn.execute(t.update().where(t.c.id == prediction_id).values(status=value))


def _insert_review(
    conn: sa.Connection,
    pred: Prediction,
    rules: TaskReview,
    action: str,
    reviewer: str,
    label_index: int | None,
    comment: str,
    digest: str | None,
) -> int:
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
    review_id = int(conn.execute(schema.reviews.insert().values(**row)).inserted_primary_key[0])
    if rules.reviews_mask_file:
        masks = schema.review_masks
        conn.execute(
            masks.insert().values(review_id=review_id, mask_ref=pred.mask_ref, mask_sha256=digest)
        )
    return review_id


def _conflict(
    pred: Prediction,
    action: str,
    reviewer: str,
    expected: int | None | AnyState,
    latest: Review | None,
) -> str | None:
    """Why a review of a case in state ``latest`` that its reviewer saw in state ``expected``
    is refused (None: it is not)."""
    if expected is ANY_STATE or expected == (latest.id if latest else None):
        return None
    if latest is None:  # the review the reviewer saw is gone: cannot happen (append-only)
        now = "has no review now"
    else:
        when = f"{latest.created_at:%Y-%m-%d %H:%M:%S} UTC"
        now = f"was reviewed meanwhile: {latest.action} by {latest.reviewer} at {when}"
    saw = "pending" if expected is None else f"at review {expected}"
    return (
        f"case {pred.id} changed since {reviewer} saw it ({saw}): it {now}; "
        f"the {action} was not saved"
    )


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
