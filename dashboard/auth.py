"""Login gate: local users (bcrypt, in the review store) or OIDC through ``st.login``.

Sign-ins, failed and refused sign-ins, lockouts and sign-outs are audited by the store.

A local sign-in survives a reload of the page: the store issues a signed session token
(:mod:`medflow.dashboard.sessions`) that the page puts in a cookie; a new connection reads it
from ``st.context.cookies`` and the server verifies it. Streamlit has no call to set a
cookie, so a tiny script in a zero-height ``st.iframe`` (same origin) sets it on the page
(``SameSite=Strict``, ``Secure`` under HTTPS; not ``HttpOnly``, which a script cannot set:
the signature, expiry and server-side revocation protect it). Signing out revokes the
session in the store and clears the cookie.
"""

from __future__ import annotations

import json

import streamlit as st

from medflow.dashboard.records import AccountLocked, User
from medflow.dashboard.sessions import COOKIE, LIFETIME
from medflow.dashboard.store import ReviewStore

SESSION_KEY = "medflow_user"
TOKEN_KEY = "medflow_session_token"
COOKIE_KEY = "medflow_cookie_to_set"  # the token to put in the cookie ("": clear it)


def oidc_configured() -> bool:
    """True when ``.streamlit/secrets.toml`` has an ``[auth]`` section for ``st.login``."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all means "not configured"
        return False


def current_user(store: ReviewStore) -> User | None:
    """The signed-in user, or None.

    OIDC identities take their role from the users table (by e-mail) and default to
    reviewer: the identity provider decides who may sign in, medflow who is admin.
    """
    user = st.session_state.get(SESSION_KEY)
    if user is not None:
        return user
    token = _cookie_token()
    user = store.session_user(token) if token else None
    if user is not None:  # a reload of a signed-in page: the same session goes on
        st.session_state[SESSION_KEY] = user
        st.session_state[TOKEN_KEY] = token
        return user
    if oidc_configured() and st.user.is_logged_in:
        email = str(st.user.get("email") or st.user.get("sub") or "")
        known = store.get_user(email) if email else None
        user = User(username=email, role=known.role if known else "reviewer")
        st.session_state[SESSION_KEY] = user
        store.record_event(email, "login", f"signed in (single sign-on) as a {user.role}")
        return user
    return None


def login_page(store: ReviewStore) -> None:
    """Renders the sign-in form; stores the user in the session on success."""
    st.title("medflow review: sign in")
    with st.form("login"):
        username = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            user = store.authenticate(username.strip(), password)
        except AccountLocked as exc:
            message = str(exc)
            st.error(f"{message[:1].upper()}{message[1:]}.")
            user = None
        else:
            if user is None:
                st.error("Wrong user name or password.")
        if user is not None:
            token = store.issue_session(user.username)
            st.session_state.update({SESSION_KEY: user, TOKEN_KEY: token, COOKIE_KEY: token})
            st.rerun()
    if oidc_configured():
        st.button("Sign in with single sign-on", on_click=st.login)
    elif not store.list_users():
        st.info("No users yet: create one with `medflow dashboard add-user NAME --role admin`.")


def logout(store: ReviewStore) -> None:
    """Signs the session's user out (audited)."""
    user = st.session_state.pop(SESSION_KEY, None)
    store.revoke_session(st.session_state.pop(TOKEN_KEY, None))
    st.session_state[COOKIE_KEY] = ""
    if user is not None:
        store.record_event(user.username, "logout", "signed out")
    if oidc_configured() and st.user.is_logged_in:
        st.logout()


def _cookie_token() -> str | None:
    try:
        return st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - no browser connection (bare script runs): no cookie
        return None


def sync_cookie() -> None:
    """Sets (after a sign-in) or clears (after a sign-out) the session cookie in the browser."""
    token = st.session_state.pop(COOKIE_KEY, None)
    if token is None:
        return
    age = int(LIFETIME.total_seconds()) if token else 0
    value = json.dumps(f"{COOKIE}={token}; Path=/; Max-Age={age}; SameSite=Strict")
    st.iframe(
        "<script>const d = window.parent.document;"
        f"d.cookie = {value} + (d.location.protocol === 'https:' ? '; Secure' : '');"
        "</script>",
        height=1,
    )
