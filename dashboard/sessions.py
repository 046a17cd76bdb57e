"""Signed browser sessions: a reviewer stays signed in across a reload of the page.

Streamlit keeps ``st.session_state`` per browser tab connection, so a reload is a new session
and would sign the reviewer out. After a sign-in the dashboard sets a cookie holding a token

    <session id>.<user name, base64url>.<expiry, unix seconds>.<HMAC-SHA256, base64url>

signed with a key made once per review store (``store_secrets``, 256 random bits; or
``MEDFLOW_SESSION_SECRET`` when set, e.g. to share it between stores). A new connection reads
the cookie (``st.context.cookies``) and :meth:`StoreSessions.session_user` verifies it on the
server: signature (constant-time), expiry, the session not revoked (signing out revokes it in
``browser_sessions``) and the user still existing. Tokens live :data:`LIFETIME`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from medflow.dashboard import events, schema
from medflow.dashboard.records import User

COOKIE = "medflow_session"
LIFETIME = timedelta(hours=8)
ENV_SECRET = "MEDFLOW_SESSION_SECRET"
_SECRET_NAME = "session_hmac_key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StoreSessions:
    """Signed session tokens of the review store (a base of ``ReviewStore``)."""

    engine: sa.Engine

    def session_key(self) -> bytes:
        """The HMAC key of session tokens (made and stored on first use)."""
        if os.environ.get(ENV_SECRET):
            return os.environ[ENV_SECRET].encode("utf-8")
        t = schema.store_secrets
        query = sa.select(t.c.value).where(t.c.name == _SECRET_NAME)
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        if value is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(t.insert().values(name=_SECRET_NAME, value=secrets.token_hex(32)))
            except sa.exc.IntegrityError:  # another process made it first: theirs is read below
                pass
            with self.engine.connect() as conn:
                value = conn.execute(query).scalar()
        return bytes.fromhex(value)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.session_key(), payload.encode("ascii"), hashlib.sha256).digest())

    def issue_session(self, username: str, lifetime: timedelta = LIFETIME) -> str:
        """A signed token for ``username``, recorded as a session of the store."""
        now = events.utcnow()
        session_id = secrets.token_urlsafe(16)
        expires = now + lifetime
        with self.engine.begin() as conn:
            conn.execute(
                schema.browser_sessions.insert().values(
                    id=session_id, username=username, created_at=now, expires_at=expires
                )
            )
        payload = f"{session_id}.{_b64(username.encode('utf-8'))}.{int(expires.timestamp())}"
        return f"{payload}.{self._sign(payload)}"

    def session_user(self, token: str | None) -> User | None:
        """The user of a valid token; None for a missing, forged, expired or revoked one."""
        parts = (token or "").split(".")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        payload = ".".join(parts[:3])
        if not hmac.compare_digest(self._sign(payload), parts[3]):
            return None
        if datetime.fromtimestamp(int(parts[2]), timezone.utc) <= events.utcnow():
            return None
        try:
            username = _unb64(parts[1]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        t = schema.browser_sessions
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == parts[0])).first()
        if row is None or row.revoked_at is not None or row.username != username:
            return None
        return self.get_user(username)  # type: ignore[attr-defined]  # StoreUsers

    def revoke_session(self, token: str | None) -> None:
        """Revokes the token's session (a later :meth:`session_user` refuses it)."""
        session_id = (token or "").split(".")[0]
        if not session_id:
            return
        t = schema.browser_sessions
        with self.engine.begin() as conn:
            conn.execute(
                t.update()
                .where(t.c.id == session_id, t.c.revoked_at.is_(None))
                .values(revoked_at=events.utcnow())
            )
