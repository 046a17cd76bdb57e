"""Tables of the review store and their versioned migrations.

The schema version lives in a one-column table ``schema_version``. Each migration is a
function ``(connection) -> None``; ``MIGRATIONS[i]`` brings the schema from version ``i``
to ``i + 1``. Migrations only ever get appended: never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sop_instance_uid", sa.String(64), nullable=False),
    sa.Column("study_instance_uid", sa.String(64), nullable=False),
    sa.Column("series_instance_uid", sa.String(64), nullable=False),
    sa.Column("frame_index", sa.Integer, nullable=False, default=0),
    sa.Column("image_ref", sa.Text, nullable=False),
    sa.Column("mask_ref", sa.Text),
    sa.Column("heatmap_ref", sa.Text),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("scores", sa.JSON, nullable=False),
    sa.Column("predicted_index", sa.Integer, nullable=False),
    # Denormalised so the queue sorts in SQL: max(scores), and the largest total-variation
    # distance to another model's scores for the same image (0 when only one model scored it).
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("disagreement", sa.Float, nullable=False, default=0.0),
    # Latest review action ("pending" until reviewed) so the queue filters without a join.
    sa.Column("status", sa.String(16), nullable=False, default="pending"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # The task plug-in that reviews it (version 5; medflow.core.tasks.get_task).
    sa.Column("task", sa.String(64), nullable=False),
    # The model's out-of-distribution guard (version 7): its score and decision (None: no guard).
    sa.Column("ood_score", sa.Float),
    sa.Column("in_distribution", sa.Boolean),
    sa.Index("ix_predictions_instance", "sop_instance_uid", "frame_index"),
    sa.Index("ix_predictions_status_confidence", "status", "confidence"),
    sa.Index("ix_predictions_status_disagreement", "status", "disagreement"),
)

reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("prediction_id", sa.Integer, sa.ForeignKey("predictions.id"), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("label_index", sa.Integer),
    sa.Column("comment", sa.Text, nullable=False, default=""),
    sa.Column("reviewer", sa.String(128), nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_reviews_prediction", "prediction_id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("prediction_id", sa.Integer),
    sa.Column("study_instance_uid", sa.String(64)),
    sa.Column("series_instance_uid", sa.String(64)),
    sa.Column("sop_instance_uid", sa.String(64)),
    sa.Column("model_name", sa.String(128)),
    sa.Column("model_version", sa.String(64)),
    sa.Column("outcome", sa.Text, nullable=False, default=""),
    sa.Index("ix_audit_at", "at"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("username", sa.String(128), primary_key=True),
    sa.Column("password_hash", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# The segmentation mask a review judged (version 4): its file and the SHA-256 of its bytes
# at review time, so an export can refuse a mask file that changed after it was accepted.
review_masks = sa.Table(
    "review_masks",
    metadata,
    sa.Column("review_id", sa.Integer, sa.ForeignKey("reviews.id"), primary_key=True),
    sa.Column("mask_ref", sa.Text, nullable=False),
    sa.Column("mask_sha256", sa.String(64)),  # None: the file was missing when it was rejected
)

# Signed browser sessions (version 6; dashboard.sessions): the HMAC key of session cookies,
# made once per store, and each session issued, so that signing out revokes it server-side.
store_secrets = sa.Table(
    "store_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)

browser_sessions = sa.Table(
    "browser_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

# Database-side guard: the audit log refuses UPDATE and DELETE even from raw SQL.
_SQLITE_AUDIT_GUARDS = [
    f"""CREATE TRIGGER audit_log_no_{op.lower()} BEFORE {op} ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"""
    for op in ("UPDATE", "DELETE")
]
_POSTGRES_AUDIT_GUARDS = [
    """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
]


# Columns of `predictions` that later migrations add: version 1 creates the table without them.
_ADDED_LATER = ("task", "ood_score", "in_distribution")


def _as_first_created(table: sa.Table, added_later: tuple[str, ...]) -> sa.Table:
    """``table`` without the columns (and their indexes) that later migrations add."""
    columns = [c._copy() for c in table.columns if c.name not in added_later]
    copy = sa.Table(table.name, sa.MetaData(), *columns)
    for index in table.indexes:
        names = [c.name for c in index.columns]
        if not set(names) & set(added_later):
            sa.Index(index.name, *(copy.c[n] for n in names), unique=index.unique)
    return copy


def _v1_predictions_and_reviews(conn: sa.Connection) -> None:
    _as_first_created(predictions, _ADDED_LATER).create(conn)
    reviews.create(conn)


def _v2_audit_log(conn: sa.Connection) -> None:
    audit_log.create(conn)
    guards = {"sqlite": _SQLITE_AUDIT_GUARDS, "postgresql": _POSTGRES_AUDIT_GUARDS}
    for statement in guards.get(conn.dialect.name, []):
        conn.exec_driver_sql(statement)


def _v3_users(conn: sa.Connection) -> None:
    users.create(conn)


def _v4_review_masks(conn: sa.Connection) -> None:
    review_masks.create(conn)


def _v5_prediction_task(conn: sa.Connection) -> None:
    """Adds ``predictions.task``: a prediction with a mask file belongs to the task whose
    review judges mask files, the others to the default task (all there was before)."""
    from medflow.core.tasks import DEFAULT_TASK, mask_review_task

    conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN task VARCHAR(64) NOT NULL DEFAULT ''")
    t = sa.table("predictions", sa.column("task"), sa.column("mask_ref"))
    conn.execute(t.update().where(t.c.mask_ref.is_(None)).values(task=DEFAULT_TASK))
    with_masks = conn.execute(
        sa.select(sa.func.count()).select_from(t).where(t.c.mask_ref.is_not(None))
    ).scalar()
    if with_masks:
        mask_task = mask_review_task()
        if mask_task is None:
            raise RuntimeError(
                f"the review store holds {with_masks} prediction(s) with masks but no installed "
                "task reviews mask files; install that task plug-in, then open the store again"
            )
        conn.execute(t.update().where(t.c.mask_ref.is_not(None)).values(task=mask_task))
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE predictions ALTER COLUMN task DROP DEFAULT")


def _v6_browser_sessions(conn: sa.Connection) -> None:
    store_secrets.create(conn)
    browser_sessions.create(conn)


def _v7_prediction_guard(conn: sa.Connection) -> None:
    """Adds ``predictions.ood_score`` and ``in_distribution`` (NULL: recorded without a guard)."""
    conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN ood_score FLOAT")
    conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN in_distribution BOOLEAN")


MIGRATIONS: list[Callable[[sa.Connection], None]] = [
    _v1_predictions_and_reviews,
    _v2_audit_log,
    _v3_users,
    _v4_review_masks,
    _v5_prediction_task,
    _v6_browser_sessions,
    _v7_prediction_guard,
]
LATEST_VERSION = len(MIGRATIONS)


def current_version(conn: sa.Connection) -> int:
    """Returns the schema version of the database (0 for an empty database)."""
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0


def migrate(engine: sa.Engine, now: Callable[[], object]) -> int:
    """Applies the pending migrations, each in its own transaction; returns the new version.

    Raises:
        RuntimeError: the database has a newer schema than this medflow knows.
    """
    with engine.begin() as conn:
        if not sa.inspect(conn).has_table("schema_version"):
            schema_version.create(conn)
        version = current_version(conn)
    if version > LATEST_VERSION:
        raise RuntimeError(
            f"review store schema is version {version}, newer than this medflow "
            f"(knows up to {LATEST_VERSION}); upgrade medflow"
        )
    for target in range(version + 1, LATEST_VERSION + 1):
        with engine.begin() as conn:
            MIGRATIONS[target - 1](conn)
            conn.execute(schema_version.insert().values(version=target, applied_at=now()))
    return LATEST_VERSION
