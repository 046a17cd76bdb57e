"""The dashboard app under Streamlit's AppTest (open it at a case and sign in), or served by
``streamlit run`` for a browser."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from streamlit.testing.v1 import AppTest

from medflow.dashboard.config import APP_SCRIPT
from tests.support.waiting import wait_until


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


@contextlib.contextmanager
def served_dashboard(store_url: str, workdir: Path, cwd: Path, log: Path):
    """The dashboard app served by ``streamlit run`` on a free loopback port against
    ``store_url``; yields its base URL once it answers its health check."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MEDFLOW_STORE_URL": store_url, "MEDFLOW_WORKDIR": str(workdir),
           "MEDFLOW_MLMD_DB": "", "MEDFLOW_MLMD_CONFIG": "", "MEDFLOW_MODELS_DIR": ""}  # fmt: skip
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.port", str(port), "--server.address", "127.0.0.1",
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)

        def healthy():
            assert proc.poll() is None, f"streamlit exited with {proc.returncode}"
            try:
                url = f"http://127.0.0.1:{port}/_stcore/health"
                with urllib.request.urlopen(url, timeout=2) as r:
                    return r.read() == b"ok"
            except OSError:
                return False

        try:
            wait_until(healthy, timeout=60, interval=0.2, message="the Streamlit server")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
