"""`medflow submit` against a protocol stand-in of the Kubeflow Pipelines v2beta1 API.

No Kubeflow cluster can run here, so a small HTTP server on loopback answers the
endpoints the real ``kfp.Client`` calls (healthz, experiments, runs) and records the
request bodies; the client side is the real kfp 2.5 client.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from medflow.cli import main


class KfpStandIn(BaseHTTPRequestHandler):
    """Implements GET healthz, GET/POST experiments, POST runs of /apis/v2beta1."""

    requests: list[tuple[str, str, dict]] = []
    experiments: dict[str, dict] = {}

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):  # noqa: N802
        url = urlparse(self.path)
        self.requests.append(("GET", url.path, {"auth": self.headers.get("Authorization")}))
        if url.path == "/apis/v2beta1/healthz":
            return self._reply({"multi_user": False})
        if url.path == "/apis/v2beta1/experiments":
            wanted = json.loads(parse_qs(url.query).get("filter", ["{}"])[0])
            names = [p.get("stringValue") for p in wanted.get("predicates", [])]
            found = [e for e in self.experiments.values() if e["display_name"] in names]
            return self._reply({"experiments": found, "total_size": len(found)})
        self._reply({"error": "not found"}, 404)

    def do_POST(self):  # noqa: N802
        body = self._body()
        body["_auth"] = self.headers.get("Authorization")
        self.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            exp = {**body, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments[exp["experiment_id"]] = exp
            return self._reply(exp)
        if self.path == "/apis/v2beta1/runs":
            return self._reply({**body, "run_id": "run-123", "state": "PENDING"})
        self._reply({"error": "not found"}, 404)

    def log_message(self, *args):
        pass


@pytest.fixture()
def kfp_server():
    KfpStandIn.requests = []
    KfpStandIn.experiments = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), KfpStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture()
def compiled(compiled_spec):
    return compiled_spec


def test_submit_sends_spec_parameters_and_token(
    kfp_server, compiled, tmp_path, monkeypatch, capsys
):
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    rc = main(
        [
            "submit",
            str(compiled),
            "--host",
            kfp_server,
            "--token-file",
            str(token),
            "--experiment",
            "chest-xray",
            "--run-name",
            "nightly",
            "--param",
            "data_root=/artifacts/data/drop-7",
        ]
    )
    assert rc == 0
    assert "run-123" in capsys.readouterr().out
    posts = {path: body for method, path, body in KfpStandIn.requests if method == "POST"}
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "chest-xray"
    run = posts["/apis/v2beta1/runs"]
    assert run["display_name"] == "nightly"
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {"data_root": "/artifacts/data/drop-7"}
    sent = run["pipeline_spec"]
    spec_doc, platform_doc = yaml.safe_load_all(compiled.read_text())
    assert sent["pipeline_spec"]["root"] == spec_doc["root"]
    assert sent["pipeline_spec"]["deploymentSpec"] == spec_doc["deploymentSpec"]
    assert sent["platform_spec"] == platform_doc
    gets = [headers["auth"] for method, path, headers in KfpStandIn.requests if method == "GET"]
    assert gets and set(gets) == {"Bearer s3cr3t-token"}
    assert run["_auth"] == "Bearer s3cr3t-token"


def test_submit_rejects_unknown_parameter(kfp_server, compiled, capsys):
    rc = main(["submit", str(compiled), "--host", kfp_server, "--param", "epochs=3"])
    assert rc == 2
    assert "unknown pipeline parameter" in capsys.readouterr().err
    assert not [r for r in KfpStandIn.requests if r[0] == "POST"]


def test_submit_unreachable_host_is_one_clear_line(compiled, capsys):
    rc = main(["submit", str(compiled), "--host", "http://127.0.0.1:9"])
    assert rc == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("medflow submit: error: Kubeflow Pipelines at http://127.0.0.1:9")
    assert len(err.splitlines()) == 1
