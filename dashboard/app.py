"""Streamlit entry script of the medflow dashboard (``medflow dashboard`` runs it).

Every page sits behind the login gate; the Audit page is for admins only.
"""

from __future__ import annotations

import streamlit as st

from medflow.dashboard import auth
from medflow.dashboard.config import Settings
from medflow.dashboard.store import ReviewStore

PAGES = {
    "runs": "Runs",
    "models": "Models",
    "review": "Review queue",
    "volumes": "Volumes",
    "audit": "Audit",
}
ADMIN_ONLY = {"audit"}


@st.cache_resource(show_spinner=False)
def get_store(url: str) -> ReviewStore:
    return ReviewStore(url)


def _choose_page(store: ReviewStore, user) -> str:
    allowed = [key for key in PAGES if key not in ADMIN_ONLY or user.role == "admin"]
    wanted = st.query_params.get("page", "review")
    if wanted in PAGES and wanted not in allowed:
        st.error(f"The {PAGES[wanted]} page is for admins; you are signed in as a {user.role}.")
        wanted = "review"
    index = allowed.index(wanted) if wanted in allowed else allowed.index("review")
    with st.sidebar:
        st.markdown(f"Signed in as **{user.username}** ({user.role})")
        page = st.radio("Page", allowed, index=index, format_func=PAGES.get, key="nav_page")
        st.button("Sign out", on_click=auth.logout, args=(store,))
    st.query_params["page"] = page
    return page


def main() -> None:
    st.set_page_config(page_title="medflow review", layout="wide")
    settings = Settings.from_env()
    store = get_store(settings.store_url)
    user = auth.current_user(store)
    auth.sync_cookie()
    if user is None:
        auth.login_page(store)
        return
    page = _choose_page(store, user)
    if page == "runs":
        from medflow.dashboard.views.runs import show
    elif page == "models":
        from medflow.dashboard.views.models import show
    elif page == "audit":
        from medflow.dashboard.views.audit import show
    elif page == "volumes":
        from medflow.dashboard.views.volumes import show
    else:
        from medflow.dashboard.views.review import show
    show(settings, store, user)


if __name__ == "__main__":
    main()
