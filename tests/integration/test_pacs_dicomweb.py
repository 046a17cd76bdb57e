"""medflow against a real Orthanc PACS over DICOMweb (QIDO-RS, WADO-RS, STOW-RS)."""

from __future__ import annotations

import pytest
import requests

from tests.integration.orthanc import orthanc  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def test_orthanc_fixture_serves_dicomweb_behind_basic_auth(orthanc):  # noqa: F811
    assert requests.get(f"{orthanc.url}/system", timeout=5).status_code == 401
    system = orthanc.rest("GET", "/system").json()
    assert system["DicomPort"] == orthanc.dicom_port
    plugins = orthanc.rest("GET", "/plugins").json()
    assert "dicom-web" in plugins
    studies = requests.get(f"{orthanc.dicomweb_url}/studies", auth=orthanc.auth, timeout=5)
    assert studies.status_code == 200 and studies.json() == []
