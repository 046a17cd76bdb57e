"""Local users of the review store, sign-ins with lockout, and audit records of security events.

:class:`StoreUsers` is a part of :class:`medflow.dashboard.store.ReviewStore`. Passwords are
bcrypt-hashed and follow :func:`medflow.dashboard.security.check_password`. Every sign-in,
failed sign-in, refused sign-in of a locked user, lockout and sign-out is an audit record
(:mod:`medflow.dashboard.events`), which is also where failed sign-ins are counted.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa

from medflow.core.errors import InputError
from medflow.dashboard import events, schema
from medflow.dashboard.records import ROLES, AccountLocked, User
from medflow.dashboard.security import MAX_PASSWORD_BYTES, check_password


class StoreUsers:
    """Users and security events of the review store (a base of ``ReviewStore``)."""

    engine: sa.Engine

    def add_user(self, username: str, password: str, role: str) -> User:
        """Creates or replaces a local user (bcrypt-hashed password).

        Raises:
            InputError: unknown role, a user name with surrounding spaces, or a password the
                policy refuses (under 12 characters, the user name, a common password).
        """
        import bcrypt

        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not username or not username.strip() or username != username.strip():
            raise InputError("user name must be non-empty without surrounding spaces")
        check_password(username, password)
        hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()).decode("ascii")
        t = schema.users
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.username == username))
            conn.execute(
                t.insert().values(
                    username=username, password_hash=hashed, role=role, created_at=events.utcnow()
                )
            )
        return User(username=username, role=role)

    def authenticate(self, username: str, password: str) -> User | None:
        """Signs a user in: returns the user when the password matches, else None.

        Audits the sign-in or the failure; the ``events.MAX_FAILURES``-th failure within
        ``events.FAILURE_WINDOW`` locks the name for ``events.LOCKOUT``.

        Raises:
            AccountLocked: the name is locked (even the right password is refused), or this
                failure locked it.
        """
        import bcrypt

        now = events.utcnow()
        t = schema.users
        with self.engine.begin() as conn:
            until = events.locked_until(conn, username, now)
            if until is not None:
                events.write_event(conn, username, "login_locked",
                                   f"refused: locked until {until:%H:%M:%S} UTC", now)  # fmt: skip
            row = conn.execute(sa.select(t).where(t.c.username == username)).first()
        if until is not None:
            raise AccountLocked(username, until)
        raw = password.encode("utf-8")[:MAX_PASSWORD_BYTES]
        # Without the user: same work as a real check, so timing does not reveal which names exist.
        stored = _dummy_hash() if row is None else row.password_hash.encode("ascii")
        matches = bcrypt.checkpw(raw, stored) and row is not None
        with self.engine.begin() as conn:
            if matches:
                events.write_event(conn, username, "login", "signed in (password)", now)
            else:
                until = events.record_failure(conn, username, now)
        if until is not None:
            raise AccountLocked(username, until)
        return User(username=row.username, role=row.role) if matches else None

    def record_event(self, actor: str, action: str, outcome: str) -> int:
        """Writes an audit record not tied to a case; returns its id.

        Args:
            action: one of ``records.EVENT_ACTIONS`` (e.g. "login" for a single sign-on,
                "logout", "export").
        """
        with self.engine.begin() as conn:
            return events.write_event(conn, actor, action, outcome, events.utcnow())

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
