"""The dashboard app under Streamlit's AppTest: open it at a case and sign in."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from medflow.dashboard.config import APP_SCRIPT


def sign_in(at: AppTest, user: str, password: str) -> AppTest:
    """Fills in the sign-in form of a run app and submits it."""
    at.text_input(key="login_user").input(user)
    at.text_input(key="login_password").input(password)
    return at.button[0].click().run()


def open_case(case: int, user: str, password: str) -> AppTest:
    """The review page at ``case``, signed in (the store and work folder come from the
    environment, ``MEDFLOW_STORE_URL`` and ``MEDFLOW_WORKDIR``)."""
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=60)
    at.query_params["page"] = "review"
    at.query_params["case"] = str(case)
    at = sign_in(at.run(), user, password)
    assert not at.exception, at.exception
    assert at.selectbox(key="review_case").value == case
    return at
