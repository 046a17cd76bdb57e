"""Login gate: local users (bcrypt, in the review store) or OIDC through ``st.login``.

Sign-ins, failed and refused sign-ins, lockouts and sign-outs are audited by the store.
"""

from __future__ import annotations

import streamlit as st

from medflow.dashboard.records import AccountLocked, User
from medflow.dashboard.store import ReviewStore

SESSION_KEY = "medflow_user"


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
            st.session_state[SESSION_KEY] = user
            st.rerun()
    if oidc_configured():
        st.button("Sign in with single sign-on", on_click=st.login)
    elif not store.list_users():
        st.info("No users yet: create one with `medflow dashboard add-user NAME --role admin`.")


def logout(store: ReviewStore) -> None:
    """Signs the session's user out (audited)."""
    user = st.session_state.pop(SESSION_KEY, None)
    if user is not None:
        store.record_event(user.username, "logout", "signed out")
    if oidc_configured() and st.user.is_logged_in:
        st.logout()
