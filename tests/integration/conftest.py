"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from tests.integration.test_serving_helpers import start_server


@pytest.fixture(scope="module")
def server(model_base):
    """The embedded server on the test module's ``model_base`` fixture (a model base folder)."""
    srv = start_server(model_base)
    yield srv
    srv.stop()
