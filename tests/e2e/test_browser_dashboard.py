"""The served dashboard in headless Chromium: sign in, open a case, correct its label; open a
segmentation case and accept its mask.

The app runs with ``streamlit run`` on a loopback port against a temporary review store;
Chromium is driven over the DevTools protocol (``websocket-client``, already pinned). A
screenshot of the review page is left in ``test-artifacts/``. Without Chromium the test is
skipped locally and fails under CI (``CI`` set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from medflow.dashboard.store import ReviewStore
from medflow.workflows.review_samples import (
    record_mask_prediction,
    seed_store,
    threshold_mask,
    write_phantom,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "browser-pass-1"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
    "--window-size=1400,1000",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "chromium is not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; .ci/run installs it, so CI must have it")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    def check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        try:
            return predicate()
        except OSError:  # not listening yet
            return None

    return wait_until(check, timeout=timeout, interval=0.2, message=what)


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def send(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # events arrive in between; only the matching response counts
            reply = json.loads(self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"JS error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_js(self, expression: str, timeout: float = 30, what: str = ""):
        return _wait(lambda: self.js(expression), timeout, what or expression)

    def type_into(self, selector: str, text: str, timeout: float = 10) -> None:
        focus = (
            f"(() => {{ const e = document.querySelector({selector!r});"
            " if (!e || e.disabled) return false; e.focus(); return true; })()"
        )
        try:
            _wait(lambda: self.js(focus), timeout, f"an input {selector}")
        except AssertionError as exc:
            inputs = self.js(
                "[...document.querySelectorAll('input')].map(e => e.getAttribute('aria-label'))"
            )
            body = self.js("document.body.innerText")
            raise AssertionError(f"{exc}; inputs on the page: {inputs}; page: {body}") from None
        self.send("Input.insertText", text=text)

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                      windowsVirtualKeyCode=13, text="\r" if kind == "keyDown" else "")  # fmt: skip

    def click_button(self, text: str, timeout: float = 10) -> None:
        click = (
            "(() => { const b = [...document.querySelectorAll('button')]"
            f".find(b => b.innerText.trim().startsWith({text!r}) && !b.disabled);"
            " if (!b) return false; b.click(); return true; })()"
        )
        try:
            _wait(lambda: self.js(click), timeout, f"an enabled button {text!r}")
        except AssertionError as exc:
            buttons = self.js(
                "[...document.querySelectorAll('button')].map(b => [b.innerText, b.disabled])"
            )
            raise AssertionError(f"{exc}; buttons on the page: {buttons}") from None

    def wait_idle(self, timeout: float = 60) -> None:
        """Waits until the app's script run is over (Streamlit shows "Stop" while it runs)."""
        # The rerun request reaches the server first. Not a condition: a quick run can start
        # and end between two polls, so there is nothing that reliably shows it has begun.
        time.sleep(0.3)
        self.wait_js(
            "![...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Stop')",
            timeout,
            "the app to finish running",
        )

    def close(self) -> None:
        self.ws.close()


def _body_has(text: str) -> str:
    return f"document.body && document.body.innerText.includes({text!r})"


@pytest.fixture()
def served_app(tmp_path):
    url = f"sqlite:///{tmp_path}/review.db"
    store = ReviewStore(url)
    store.add_user("alice", PASSWORD, "reviewer")
    ids = seed_store(store, tmp_path / "images", 3)
    image = tmp_path / "images" / "seg.dcm"
    write_phantom(image, seed=7)
    mask = threshold_mask(image, tmp_path / "masks" / "seg.png", 200)
    seg = record_mask_prediction(store, image, mask, labels=["background", "disc"], model="unet")
    port = _free_port()
    env = {
        **os.environ,
        "MEDFLOW_STORE_URL": url,
        "MEDFLOW_WORKDIR": str(tmp_path / "workdir"),
        "MEDFLOW_MLMD_DB": "",
        "MEDFLOW_MLMD_CONFIG": "",
        "MEDFLOW_MODELS_DIR": "",
    }
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"),
        "--server.port", str(port), "--server.address", "127.0.0.1",
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        health = f"http://127.0.0.1:{port}/_stcore/health"
        _wait(lambda: urllib.request.urlopen(health, timeout=2).read() == b"ok", 60,
              "the Streamlit server", proc)  # fmt: skip
        yield f"http://127.0.0.1:{port}", store, ids, seg
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        store.close()


@pytest.fixture()
def browser(tmp_path):
    chromium = _chromium()
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "chromium.log").open("w"),
    )
    try:
        active = profile / "DevToolsActivePort"
        port = _wait(lambda: active.is_file() and active.read_text().split("\n")[0], 30,
                     "Chromium's DevTools port", proc)  # fmt: skip
        targets = f"http://127.0.0.1:{port}/json/list"

        def page_target():
            pages = json.load(urllib.request.urlopen(targets, timeout=2))
            return next((t["webSocketDebuggerUrl"] for t in pages if t["type"] == "page"), None)

        client = DevTools(_wait(page_target, 15, "a Chromium page", proc))
        client.send("Page.enable")
        client.send("Runtime.enable")
        yield client
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _sign_in(browser: DevTools, url: str) -> None:
    browser.send("Page.navigate", url=url)
    browser.wait_js("document.querySelector('input[aria-label=\"User name\"]') !== null", 60,
                    "the sign-in form")  # fmt: skip
    assert not browser.js(_body_has("Review queue"))  # nothing behind the gate yet
    browser.type_into('input[aria-label="User name"]', "alice")
    browser.type_into('input[aria-label="Password"]', PASSWORD)
    browser.click_button("Sign in")


def test_sign_in_open_case_and_correct_label_in_chromium(served_app, browser, artifacts_dir):
    base, store, ids, seg = served_app
    first = store.list_queue(sort="confidence")[0]
    assert first.task == "classification", "the classification case must come first"
    _sign_in(browser, f"{base}/?page=review")
    browser.wait_js(_body_has(f"Case #{first.id}"), 60, "the first case after sign-in")
    browser.wait_idle()
    assert browser.js(_body_has("Signed in as alice"))
    # Opening the page opened the least confident case: one view in the audit log.
    assert [(r.action, r.prediction_id) for r in store.audit_records()] == [
        ("view", first.id),
        ("login", None),
    ]
    browser.type_into('input[aria-label="Comment"]', "rib artefact")
    browser.press_enter()
    browser.wait_js(
        "[...document.querySelectorAll('input[aria-label=\"Comment\"]')]"
        ".some(e => e.value === 'rib artefact')",
        10,
        "the comment",
    )
    browser.wait_idle()  # the comment's rerun, before the button reads it
    browser.click_button("Correct label")
    browser.wait_js(_body_has(f"Case {first.id}: correct saved."), 30, "the saved correction")
    browser.wait_idle()
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    path = artifacts_dir / "dashboard_review_corrected.png"
    path.write_bytes(base64.b64decode(shot))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000

    [label] = store.reviewed_labels()
    assert (label.prediction_id, label.action, label.reviewer) == (first.id, "correct", "alice")
    assert label.label_index == 1 - first.predicted_index and label.comment == "rib artefact"
    assert store.get_prediction(first.id).status == "corrected"
    records = store.audit_records()
    corrections = [r for r in records if r.action == "correct"]
    assert len(corrections) == 1 and corrections[0].actor == "alice"
    assert corrections[0].sop_instance_uid == first.sop_instance_uid
    assert "comment: rib artefact" in corrections[0].outcome
    # The action moved on to the next case, which is a second view.
    assert sorted(r.prediction_id for r in records if r.action == "view")[0] in ids
    assert sum(r.action == "view" for r in records) == 2

    # A segmentation case (a new page load is a new session: sign in again): its mask is
    # drawn over the image, with a legend, and accepting it is recorded.
    _sign_in(browser, f"{base}/?page=review&case={seg}")
    browser.wait_js(_body_has("Accept mask"), 60, "the segmentation case")
    browser.wait_idle()
    assert browser.js(_body_has("disc (")) and not browser.js(_body_has("Correct label"))
    browser.wait_js(
        "[...document.querySelectorAll('img')].some(i => i.src.startsWith('data:image/png') &&"
        " i.complete && i.naturalWidth === 64)",
        10,
        "the overlaid 64x64 image",
    )
    browser.click_button("Accept mask")
    browser.wait_js(_body_has(f"Case {seg}: accept saved."), 30, "the accepted mask")
    assert store.get_prediction(seg).status == "accepted"
    [accepted] = [r for r in store.audit_records() if r.action == "accept"]
    assert accepted.prediction_id == seg and "mask " in accepted.outcome
