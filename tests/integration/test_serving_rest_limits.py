"""The REST server under bursts (issue 23, item 5): a listen backlog for many new
connections, idle keep-alive connections closed, and request bodies bounded together."""

from __future__ import annotations

import http.client
import threading
import time

from medflow.serving.manager import ModelManager
from medflow.serving.rest import RestServer
from tests.support.waiting import wait_until

LIMIT = 1 << 20


def _server(**kwargs) -> RestServer:
    srv = RestServer(
        ModelManager([], poll_seconds=0), "127.0.0.1", 0, max_body_bytes=LIMIT, **kwargs
    )
    srv.start()
    return srv


def test_a_burst_of_keep_alive_clients_is_answered_without_resets():
    srv = _server()
    errors, answers = [], []
    n = 200
    start = threading.Barrier(n)

    def client() -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
            start.wait(timeout=30)  # every client connects at once
            for _ in range(3):
                conn.request("GET", "/v1/models/absent")
                answers.append(conn.getresponse().read() and True)
            conn.close()
        except OSError as exc:  # ConnectionResetError with a backlog of 5
            errors.append(repr(exc))

    try:
        threads = [threading.Thread(target=client) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        srv.stop()
    assert errors == [] and len(answers) == n * 3


def test_an_idle_connection_is_closed_after_the_timeout():
    srv = _server(idle_timeout_s=0.5)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/v1/models/absent")
        response = conn.getresponse()
        assert response.status == 404 and response.read()  # the whole answer, kept alive
        started = time.monotonic()
        assert conn.sock.recv(65536) == b""  # then the server hung up on the idle connection
        assert time.monotonic() - started < 5
        conn.close()
    finally:
        srv.stop()


def test_bodies_in_flight_stay_within_the_budget():
    srv = _server()
    budget = srv._httpd.body_budget
    body = b"x" * (LIMIT - 10)
    statuses = []

    def post() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("POST", "/v1/models/absent:predict", body=body)
        statuses.append(conn.getresponse().status)
        conn.close()

    try:
        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        wait_until(lambda: budget.in_flight == 0, timeout=10, message="bodies released")
    finally:
        srv.stop()
    assert statuses == [400] * 8  # read whole, then refused (not JSON): no model needed
    assert 0 < budget.peak <= budget.limit == 2 * LIMIT
