"""Publishing a SavedModel to a TF Serving layout: content hash, contract, atomic rename.

No TFX imports: the Pusher executor and ``medflow`` tools share these functions. Paths go
through ``tf.io.gfile`` so the same code works on local disks and object stores (where a
rename is a copy, but still the last step).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from medflow.core.contract import CONTRACT_FILE, ModelContract
from medflow.core.tasks import get_task


class ContractMismatch(ValueError):
    """The SavedModel's signatures disagree with the contract that would ship with it."""


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def content_sha256(model_dir: str) -> str:
    """SHA-256 over the relative paths and bytes of every file under ``model_dir``."""
    gfile = _gfile()
    digest = hashlib.sha256()
    files = []
    for root, _, names in gfile.walk(model_dir):
        for name in names:
            path = f"{root.rstrip('/')}/{name}"
            files.append((path[len(model_dir.rstrip("/")) + 1 :], path))
    for rel, path in sorted(files):
        digest.update(rel.encode() + b"\0")
        with gfile.GFile(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _tensor_spec(spec) -> dict[str, Any]:
    shape = [-1 if d is None else int(d) for d in spec.shape.as_list()]
    return {"dtype": spec.dtype.name, "shape": shape}


def read_signatures(model_dir: str) -> dict[str, Any]:
    """``{name: {"inputs": {...}, "outputs": {...}}}`` of a SavedModel's signatures."""
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    out = {}
    for name, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        out[name] = {
            "inputs": {k: _tensor_spec(v) for k, v in sorted(kwargs.items())},
            "outputs": {k: _tensor_spec(v) for k, v in sorted(fn.structured_outputs.items())},
        }
    return out


def _as_contract(contract: ModelContract | Mapping[str, Any]) -> ModelContract:
    if isinstance(contract, ModelContract):
        return contract
    return ModelContract.from_dict(contract, source="contract to publish")


def check_contract(contract: ModelContract | Mapping[str, Any]) -> None:
    """Raise :class:`ContractMismatch` unless the signatures serve what the contract says.

    Args:
        contract: the contract, or its JSON form (an older schema is migrated first).
    """
    contract = _as_contract(contract)
    default = contract.signatures.get("serving_default")
    if not default:
        raise ContractMismatch("the SavedModel has no serving_default signature")
    image = default["inputs"].get("image")
    if not image or image["dtype"] != "float32":
        raise ContractMismatch(f"serving_default needs a float32 'image' input, got {image}")
    spec = contract.pixel_spec
    size = spec.size
    if size is not None and len(image["shape"]) == 4:  # a volume model's grid is in its 5-D shape
        expected = [-1, int(size[0]), int(size[1]), int(spec.channels)]
        if image["shape"] != expected:
            raise ContractMismatch(
                f"serving_default image shape {image['shape']} != pixel_spec {expected}"
            )
    problem = get_task(contract.task).check_serving_outputs(
        default["outputs"], size, contract.labels
    )
    if problem:
        raise ContractMismatch(problem)
    _check_tensors(contract, default)
    examples = contract.signatures.get("serve_examples")
    if examples and examples["inputs"].get("examples", {}).get("dtype") != "string":
        raise ContractMismatch("serve_examples needs a string 'examples' input")


def _check_tensors(contract: ModelContract, default: Mapping[str, Any]) -> None:
    """The contract's inputs/outputs are serving_default's (same name, dtype and shape)."""
    for kind, tensors in (("inputs", contract.inputs), ("outputs", contract.outputs)):
        served = default[kind]
        for t in tensors:
            sig = served.get(t.name)
            if sig is None or (sig["dtype"], list(sig["shape"])) != (t.dtype, list(t.shape)):
                raise ContractMismatch(
                    f"contract {kind} {t.name} {t.dtype}{list(t.shape)} != serving_default's {sig}"
                )


def existing_versions(model_base: str) -> dict[int, str]:
    """Version number -> directory of the published versions under ``<base>/<name>``."""
    gfile = _gfile()
    if not gfile.isdir(model_base):
        return {}
    out = {}
    for entry in gfile.listdir(model_base):
        name = entry.rstrip("/")
        if name.isdigit():
            out[int(name)] = f"{model_base.rstrip('/')}/{name}"
    return out


def find_same_content(model_base: str, sha256: str) -> tuple[int, str] | None:
    """The published version whose contract records ``sha256``, if any.

    Reads the raw JSON (``model_sha256`` is a top-level key in every schema version), so an
    old or damaged contract never stops a push.
    """
    gfile = _gfile()
    for version, path in sorted(existing_versions(model_base).items()):
        contract_path = f"{path}/{CONTRACT_FILE}"
        if not gfile.exists(contract_path):
            continue
        with gfile.GFile(contract_path) as f:
            try:
                doc = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
        if isinstance(doc, dict) and doc.get("model_sha256") == sha256:
            return version, path
    return None


def _copy_tree(src: str, dst: str) -> None:
    gfile = _gfile()
    for root, _, names in gfile.walk(src):
        rel = root[len(src.rstrip("/")) :].lstrip("/")
        target = f"{dst}/{rel}" if rel else dst
        gfile.makedirs(target)
        for name in names:
            gfile.copy(f"{root.rstrip('/')}/{name}", f"{target}/{name}", overwrite=True)


def next_version(model_base: str) -> int:
    """A new version number: the Unix time, or one above the newest existing version."""
    versions = existing_versions(model_base)
    return max([int(time.time()), *(v + 1 for v in versions)])


def publish(
    model_dir: str,
    model_base: str,
    contract: ModelContract | Mapping[str, Any],
    version: int | None = None,
) -> tuple[int, str, bool]:
    """Publish ``model_dir`` as a new version unless its content is already published.

    Args:
        model_dir: the SavedModel to publish.
        model_base: ``<base_directory>/<model_name>``.
        contract: the contract (or its JSON form, migrated when older); ``version``,
            ``signatures`` (with ``inputs``/``outputs``) and ``model_sha256`` are filled in
            here and the result is checked with :func:`check_contract`.
        version: publish as this version, even when the content is already published
            (a guard published beside its model's version); None: the next free number.

    Returns:
        (version, destination directory, whether a new version was written).

    Raises:
        ContractMismatch: the SavedModel's signatures disagree with the contract.
        medflow.core.errors.ConfigError: the contract does not fit its JSON schema.
    """
    gfile = _gfile()
    contract = _as_contract(contract)
    sha = content_sha256(model_dir)
    same = find_same_content(model_base, sha) if version is None else None
    if same:
        return same[0], same[1], False
    version = next_version(model_base) if version is None else version
    contract = replace(
        contract.with_signatures(read_signatures(model_dir)),
        version=str(version),
        model_sha256=sha,
    )
    check_contract(contract)
    text = contract.to_json()  # validated against the schema before anything is written
    gfile.makedirs(model_base)
    staging = f"{model_base.rstrip('/')}/.staging-{version}-{uuid.uuid4().hex[:8]}"
    final = f"{model_base.rstrip('/')}/{version}"
    try:
        _copy_tree(model_dir, staging)
        # Object stores have no atomic file write; the rename below is the atomic step.
        with gfile.GFile(f"{staging}/{CONTRACT_FILE}", "w") as f:
            f.write(text)
        # Last step: TF Serving only sees numeric directories, so the version appears whole.
        gfile.rename(staging, final, overwrite=False)
    finally:
        if gfile.exists(staging):
            gfile.rmtree(staging)
    return version, final, True
