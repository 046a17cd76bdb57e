"""A real Orthanc PACS with its DICOMweb plugin, started on loopback for tests and benchmarks.

Orthanc runs from the Debian packages ``orthanc`` and ``orthanc-dicomweb`` (``.ci/run`` installs
them) with a temporary storage folder, free HTTP and DICOM ports and HTTP basic auth on. Without
the binary the tests skip locally, and fail under CI (``$CI`` set), where it must be present.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.waiting import WaitTimeout, wait_until

USER, PASSWORD = "medflow", "orthanc-test-password"
PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)


def find_orthanc() -> tuple[str, str] | None:
    """(Orthanc binary, DICOMweb plugin .so), or None when either is missing."""
    binary = shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/local/sbin/Orthanc") if os.access(p, os.X_OK)),
        None,
    )
    plugin = os.environ.get("MEDFLOW_ORTHANC_DICOMWEB_PLUGIN") or next(
        (hit for pattern in PLUGIN_GLOBS for hit in sorted(glob.glob(pattern))), None
    )
    return (binary, plugin) if binary and plugin else None


def require_orthanc() -> tuple[str, str]:
    """The binary and plugin; skip (locally) or fail (CI) with the reason when absent."""
    found = find_orthanc()
    if found is None:
        reason = (
            "Orthanc with the DICOMweb plugin is not installed (Debian packages orthanc and "
            "orthanc-dicomweb; `.ci/run` installs them)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process over a storage folder; ``stop()`` and ``start()`` again keep its data.

    Attributes:
        url: HTTP root, e.g. ``http://127.0.0.1:PORT``.
        dicomweb_url: the DICOMweb root (``url + /dicom-web``).
        auth: (user, password) accepted by the server.
    """

    def __init__(self, root: Path, binary: str, plugin: str) -> None:
        self.root = root
        self.binary = binary
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.auth = (USER, PASSWORD)
        self.log = root / "orthanc.log"
        self.config = root / "orthanc.json"
        storage = root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "medflow-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "MEDFLOWTEST",
            "RemoteAccessAllowed": False,  # loopback clients only
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "StorageCompression": False,
            "HttpCompressionEnabled": False,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
        }
        self.config.write_text(json.dumps(config, indent=1))
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Orthanc:
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )

        def answers() -> bool:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self._proc.returncode} at start-up:\n{self.log_tail()}"
                )
            try:
                return requests.get(f"{self.url}/system", auth=self.auth, timeout=1).ok
            except requests.RequestException:
                return False

        try:
            wait_until(answers, timeout=timeout, interval=0.1, message="Orthanc's /system")
        except WaitTimeout:
            self.stop()
            raise RuntimeError(
                f"Orthanc did not answer /system within {timeout}s:\n{self.log_tail()}"
            ) from None
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop the process: SIGKILL (a crash) when ``kill``, else SIGTERM then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        """A call to Orthanc's own REST API (counts, deletions), raising on HTTP errors."""
        resp = requests.request(method, f"{self.url}{path}", auth=self.auth, timeout=30, **kwargs)
        resp.raise_for_status()
        return resp

    def instance_count(self) -> int:
        return int(self.rest("GET", "/statistics").json()["CountInstances"])

    def clear(self) -> None:
        """Delete every study (tests sharing one server start from an empty PACS)."""
        for study in self.rest("GET", "/studies").json():
            self.rest("DELETE", f"/studies/{study}")


def orthanc_server(root: Path) -> Iterator[Orthanc]:
    """Start Orthanc under ``root``; stop it afterwards (a generator for fixtures)."""
    binary, plugin = require_orthanc()
    server = Orthanc(root, binary, plugin).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[Orthanc]:
    """A running Orthanc for the tests of one module (import this fixture into the module)."""
    yield from orthanc_server(tmp_path_factory.mktemp("orthanc"))
