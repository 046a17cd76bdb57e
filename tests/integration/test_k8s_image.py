"""The pipeline-step image (Dockerfile) is buildable from this tree and matches the manifests.

No Docker engine runs here, so the Dockerfile is checked statically: pinned base, the
locked dependency set installed with pip, every COPY source present and not excluded by
.dockerignore, every package of the distribution copied, a numeric non-root user that the
Kubernetes pods running the image also use, and the image name/tag from one place."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import sys

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

from medflow.core.errors import ConfigError
from medflow.pipelines import config as pconfig
from tests.support import kfp_manifests as km

REPO = km.REPO


def _instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _ignored(path: str) -> bool:
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for pat in patterns:
        for part in _prefixes(path):
            if fnmatch.fnmatch(part, pat) or fnmatch.fnmatch(part, pat.removeprefix("**/")):
                return True
            if pat.startswith("**/") and fnmatch.fnmatch(os.path.basename(part), pat[3:]):
                return True
    return False


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def test_base_image_pinned_python310_slim():
    [(op, base)] = [i for i in _instructions() if i[0] == "FROM"]
    assert re.fullmatch(r"python:3\.10(\.\d+)?-slim(-\w+)?", base), base
    assert km.image_problems(base) == []


def test_installs_the_lock_with_pip_then_the_project():
    runs = [rest for op, rest in _instructions() if op == "RUN"]
    lock_step = next(i for i, r in enumerate(runs) if "-r requirements.lock" in r)
    assert "pip install" in runs[lock_step]
    project_step = next(
        i for i, r in enumerate(runs) if re.search(r"pip install --no-deps \.(\s|$)", r)
    )
    assert lock_step < project_step
    # `|| true` would hide a failed install.
    assert not any("|| true" in r for r in runs)


def test_copy_sources_exist_cover_the_distribution_and_are_not_ignored():
    copied = []
    for op, rest in _instructions():
        if op == "COPY":
            *sources, _dest = shlex.split(rest)
            copied += [s for s in sources if not s.startswith("--")]
    for src in copied:
        assert (REPO / src).exists(), src
        assert not _ignored(src), f"{src} is excluded by .dockerignore"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    # Every source folder the package-dir mapping installs is copied into the image.
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    assert folders <= set(copied)
    assert pyproject["project"]["readme"] in copied
    assert "requirements.lock" in copied


def test_dockerignore_keeps_local_state_and_secrets_out():
    for path in (".venv/bin/python", ".git/HEAD", ".medflow/metadata.sqlite", "k8s/secrets/db/url"):
        assert _ignored(path), path
    assert _ignored("components/models/__pycache__/x.cpython-310.pyc")
    assert not _ignored("components/models/features.py")


def test_runs_as_numeric_non_root_user_matching_the_pods():
    [(_, user)] = [i for i in _instructions() if i[0] == "USER"]
    uid = int(user.split(":")[0])
    assert uid != 0
    try:
        objects = km.render(REPO / "k8s" / "overlays" / "cpu")
    except ConfigError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    users = set()
    for obj in objects:
        spec = km.pod_spec(obj) or {}
        for c in km.containers(spec):
            if c["image"] == pconfig.PIPELINE_IMAGE:
                users.add(
                    (c.get("securityContext") or {}).get(
                        "runAsUser", spec["securityContext"]["runAsUser"]
                    )
                )
    assert users == {uid}


def test_image_names_come_from_pipelines_config():
    objects_by_overlay = {}
    for overlay in ("cpu", "local", "gpu"):
        try:
            objects_by_overlay[overlay] = km.render(REPO / "k8s" / "overlays" / overlay)
        except ConfigError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(str(exc))
    for overlay, objects in objects_by_overlay.items():
        images = {c["image"] for o in objects for c in km.containers(km.pod_spec(o) or {})}
        serving = pconfig.SERVING_IMAGE + ("-gpu" if overlay == "gpu" else "")
        assert pconfig.PIPELINE_IMAGE in images, overlay
        assert serving in images, overlay
        others = images - {pconfig.PIPELINE_IMAGE, serving}
        assert all(i.startswith("postgres:") for i in others), others
    # The Dockerfile's build instruction names the same tag source.
    assert "PIPELINE_IMAGE" in (REPO / "Dockerfile").read_text()
