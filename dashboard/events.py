"""Audit records not tied to a case, and sign-in throttling read from the audit log.

A user (any name tried, known or not) with ``MAX_FAILURES`` failed sign-ins within
``FAILURE_WINDOW`` is locked for ``LOCKOUT``: the audit log's "login_failed" records are the
count (since the later of the window's start, the user's last sign-in and last lockout), a
"lockout" record starts the lock, and every refused attempt meanwhile is "login_locked".
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from medflow.dashboard import schema
from medflow.dashboard.queries import utc
from medflow.dashboard.records import EVENT_ACTIONS, ReviewError

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
_ACTOR_CHARS = 128  # audit_log.actor


def utcnow() -> datetime:
    """The store's clock (timezone-aware UTC)."""
    return datetime.now(timezone.utc)


def actor_name(username: str) -> str:
    """The audit log's name for a sign-in attempt (whatever was typed, bounded)."""
    return username[:_ACTOR_CHARS] or "(empty)"


def write_event(conn: sa.Connection, actor: str, action: str, outcome: str, at: datetime) -> int:
    """Appends an audit record without a case; returns its id."""
    if action not in EVENT_ACTIONS:
        raise ReviewError(f"audit event must be one of {', '.join(EVENT_ACTIONS)}, not {action!r}")
    row = dict(at=at, actor=actor_name(actor), action=action, outcome=outcome)
    return int(conn.execute(schema.audit_log.insert().values(**row)).inserted_primary_key[0])


def _last(conn: sa.Connection, actor: str, actions: tuple[str, ...]) -> datetime | None:
    t = schema.audit_log
    at = conn.execute(
        sa.select(sa.func.max(t.c.at)).where(t.c.actor == actor, t.c.action.in_(actions))
    ).scalar()
    return None if at is None else utc(at)


def locked_until(conn: sa.Connection, username: str, now: datetime) -> datetime | None:
    """When the user's current lockout ends; None when they are not locked."""
    started = _last(conn, actor_name(username), ("lockout",))
    if started is None or started + LOCKOUT <= now:
        return None
    return started + LOCKOUT


def record_failure(conn: sa.Connection, username: str, now: datetime) -> datetime | None:
    """Audits a failed sign-in; locks the user when it is one too many. Returns when the lock
    this failure started ends (None: not locked)."""
    actor = actor_name(username)
    write_event(conn, actor, "login_failed", "wrong user name or password", now)
    since = max([now - FAILURE_WINDOW, *filter(None, [_last(conn, actor, ("login", "lockout"))])])
    t = schema.audit_log
    failures = conn.execute(
        sa.select(sa.func.count()).where(
            t.c.actor == actor, t.c.action == "login_failed", t.c.at > since
        )
    ).scalar()
    if failures < MAX_FAILURES:
        return None
    until = now + LOCKOUT
    write_event(conn, actor, "lockout",
                f"{failures} failed sign-ins within {FAILURE_WINDOW}; locked until "
                f"{until:%Y-%m-%d %H:%M:%S} UTC", now)  # fmt: skip
    return until
