"""ModelContract: the typed, versioned ``contract.json`` beside every pushed model version.

It plays the role of a MONAI bundle's ``metadata.json``: what the model takes (``inputs``,
``pixel_spec``) and gives (``outputs``, ``labels``), what it is for, what it was trained on,
how it scored and where it came from (ML Metadata ids in ``lineage``). The Pusher writes it
(``medflow.components.pusher``); the serving client and the dashboard read it.

The file is checked against ``contract.schema.json`` (JSON Schema 2020-12, shipped beside
this module). A file without ``schema_version`` is schema 0, the untyped dict written before
this module existed (``preprocessing: {size, channels}``, ``value_range`` at the top level);
it is migrated to the current schema when loaded, then checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from medflow.core.errors import ConfigError
from medflow.core.files import atomic_write
from medflow.core.pixel_spec import PixelSpec
from medflow.core.tasks import DEFAULT_TASK

SCHEMA_VERSION = 1
CONTRACT_FILE = "contract.json"
SCHEMA_FILE = "contract.schema.json"
_FIX = "fix that field, or push the model again with the medflow Pusher"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of the ``serving_default`` signature.

    Attributes:
        name: the signature's key (``image``, ``probabilities``, ...).
        shape: dimensions; -1 or None where the size varies (the batch).
        dtype: TensorFlow dtype name (``float32``, ``int64``, ``string``, ``uint8``).
        value_range: (min, max) of the values, when known (the training images' range).
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    value_range: tuple[float | None, float | None] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.value_range is not None:
            object.__setattr__(self, "value_range", tuple(self.value_range))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``value_range`` only when known)."""
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.value_range is not None:
            out["value_range"] = list(self.value_range)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        """The inverse of :meth:`to_dict`."""
        value_range = d.get("value_range")
        return cls(
            name=d["name"],
            shape=tuple(d["shape"]),
            dtype=d["dtype"],
            value_range=tuple(value_range) if value_range is not None else None,
        )


@dataclass(frozen=True)
class ModelContract:
    """What a pushed model version promises; ``contract.json`` (see the module docstring).

    Attributes:
        task: ``classification`` or ``segmentation``.
        labels: class names in output order (segmentation: background first).
        pixel_spec: how DICOM pixels become the model input (shared with ingestion and
            the serving client).
        inputs: tensors of the ``serving_default`` signature's inputs.
        outputs: tensors of its outputs.
        intended_use: the intended use statement shown to users.
        model_name: TF Serving model name.
        version: TF Serving version (folder name); empty before publishing.
        model_sha256: SHA-256 over the SavedModel's files (the Pusher's idempotency key).
        signatures: every signature as ``{name: {"inputs": {...}, "outputs": {...}}}``.
        training_data: summary of the training split (counts, backbone, epochs).
        expected_input: what the training images were
            (:mod:`medflow.core.expected_input`): header values seen and the model-input
            pixel spacing range; empty: unknown.
        metrics: evaluation metrics, ``{"eval": {metric: value}}``.
        calibration: the calibration map in the exported graph (``method``, ``params``,
            quality before/after); empty: none recorded.
        operating_point: the cut-off the graph's ``class_id`` applies (``rule``,
            ``threshold``, ``sensitivity``, ``specificity``); empty: the most probable class.
        evaluation_uri: the ModelEvaluation artifact's URI, when known.
        lineage: ML Metadata ids (``execution_id``, ``model_artifact_id``, ...), may be empty.
        guard: the out-of-distribution guard served beside the model (same versions):
            ``model_name``, the score ``threshold`` calibrated on the eval split (a score
            above it is out of distribution), its ``quantile`` and ``false_alarm_rate``;
            empty: the model has none.
        volume_spec: volume models: the VolumeSpec the training grids were made with
            (``spacing`` mm per axis, ``size``, ``percentiles`` or ``hu_window``); predict
            resamples inputs to it; empty: a 2D model (or a volume model from before).
        created_by: ``medflow <version>`` that wrote it.
        schema_version: schema of the file; always :data:`SCHEMA_VERSION` once loaded.
    """

    task: str = DEFAULT_TASK
    labels: tuple[str, ...] = ()
    pixel_spec: PixelSpec = field(default_factory=PixelSpec)
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    intended_use: str = ""
    model_name: str = ""
    version: str = ""
    model_sha256: str = ""
    signatures: Mapping[str, Any] = field(default_factory=dict)
    training_data: Mapping[str, Any] = field(default_factory=dict)
    expected_input: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Any] = field(default_factory=dict)
    operating_point: Mapping[str, Any] = field(default_factory=dict)
    evaluation_uri: str = ""
    lineage: Mapping[str, int | str] = field(default_factory=dict)
    guard: Mapping[str, Any] = field(default_factory=dict)
    volume_spec: Mapping[str, Any] = field(default_factory=dict)
    created_by: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "version", str(self.version))

    # --- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (plain lists and dicts), as written to ``contract.json``.

        ``preprocessing`` repeats ``pixel_spec`` for readers of schema 0.
        """
        pixel_spec = self.pixel_spec.to_dict()
        out = {
            "schema_version": self.schema_version,
            "model_name": self.model_name,
            "version": self.version,
            "task": self.task,
            "labels": list(self.labels),
            "intended_use": self.intended_use,
            "pixel_spec": pixel_spec,
            "preprocessing": pixel_spec,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "training_data": dict(self.training_data),
            "expected_input": dict(self.expected_input),
            "metrics": dict(self.metrics),
            **({"calibration": dict(self.calibration)} if self.calibration else {}),
            **({"operating_point": dict(self.operating_point)} if self.operating_point else {}),
            "evaluation_uri": self.evaluation_uri,
            "lineage": dict(self.lineage),
            **({"guard": dict(self.guard)} if self.guard else {}),
            **({"volume_spec": dict(self.volume_spec)} if self.volume_spec else {}),
            "model_sha256": self.model_sha256,
            "signatures": dict(self.signatures),
            "created_by": self.created_by,
        }
        return json.loads(json.dumps(out))  # tuples -> lists, a deep copy

    def to_json(self) -> str:
        """``contract.json``'s text; raises :class:`ConfigError` unless it fits the schema."""
        d = self.to_dict()
        _validate(d, f"model contract of {self.model_name or 'the model'}")
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    def validate(self) -> None:
        """Raises :class:`ConfigError` unless :meth:`to_dict` fits the JSON schema."""
        _validate(self.to_dict(), f"model contract of {self.model_name or 'the model'}")

    @classmethod
    def from_dict(cls, d: Any, source: str = "model contract") -> ModelContract:
        """A contract from its JSON form, migrated from an older schema when needed.

        Args:
            d: the parsed ``contract.json``; without ``schema_version`` it is schema 0.
            source: names the contract in error messages (e.g. its path).

        Raises:
            ConfigError: not an object, a newer schema, or not valid for the schema.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source} is not a JSON object; {_FIX}")
        version = d.get("schema_version", 0)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ConfigError(f"{source}: schema_version {version!r} is not a version; {_FIX}")
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{source} has schema_version {version} but this medflow reads up to "
                f"{SCHEMA_VERSION}; upgrade medflow"
            )
        if version == 0:
            from medflow.core.contract_v0 import migrate_v0

            d = migrate_v0(d, source)
            source = f"{source} (schema 0, migrated)"
        _validate(d, source)
        if "preprocessing" in d and d["preprocessing"] != d["pixel_spec"]:
            raise ConfigError(
                f"{source}: preprocessing {d['preprocessing']} differs from pixel_spec "
                f"{d['pixel_spec']}; edit pixel_spec and delete preprocessing"
            )
        return cls._from_valid(d)

    @classmethod
    def _from_valid(cls, d: Mapping[str, Any]) -> ModelContract:
        return cls(
            task=d["task"],
            labels=tuple(d["labels"]),
            pixel_spec=PixelSpec.from_dict(d["pixel_spec"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            intended_use=d.get("intended_use", ""),
            model_name=d.get("model_name", ""),
            version=d.get("version", ""),
            model_sha256=d.get("model_sha256", ""),
            signatures=dict(d.get("signatures") or {}),
            training_data=dict(d.get("training_data") or {}),
            expected_input=dict(d.get("expected_input") or {}),
            metrics=dict(d.get("metrics") or {}),
            calibration=dict(d.get("calibration") or {}),
            operating_point=dict(d.get("operating_point") or {}),
            evaluation_uri=d.get("evaluation_uri", ""),
            lineage=dict(d.get("lineage") or {}),
            guard=dict(d.get("guard") or {}),
            volume_spec=dict(d.get("volume_spec") or {}),
            created_by=d.get("created_by", ""),
            schema_version=SCHEMA_VERSION,
        )

    # --- files ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> ModelContract:
        """Reads ``contract.json``, or the one in a model version directory.

        Raises:
            ConfigError: missing, unreadable, not JSON, or not a valid contract.
        """
        path = Path(path)
        if path.is_dir():
            path = path / CONTRACT_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(
                f"model contract {path} not found; pass a pushed version directory or its "
                f"{CONTRACT_FILE}"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read model contract {path}: {exc}") from exc
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"cannot read model contract {path}: not JSON ({exc}); push the model again"
            ) from exc
        return cls.from_dict(d, source=f"model contract {path}")

    def write(self, path: str | Path) -> Path:
        """Writes ``contract.json`` atomically (to ``path``, or into it if a directory).

        Returns:
            The file written.
        """
        path = Path(path)
        if path.is_dir():
            path = path / CONTRACT_FILE
        atomic_write(path, self.to_json())
        return path

    # --- building ---------------------------------------------------------------------------

    def with_signatures(self, signatures: Mapping[str, Any]) -> ModelContract:
        """A copy with ``signatures`` and the inputs/outputs of its ``serving_default``.

        Value ranges already known for a tensor (by name) are kept.
        """
        default = signatures.get("serving_default") or {}
        known = {t.name: t.value_range for t in (*self.inputs, *self.outputs)}

        def specs(tensors: Mapping[str, Any]) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(name, tuple(t["shape"]), t["dtype"], known.get(name))
                for name, t in sorted(tensors.items())
            )

        return replace(
            self,
            signatures=dict(signatures),
            inputs=specs(default.get("inputs") or {}) if default else self.inputs,
            outputs=specs(default.get("outputs") or {}) if default else self.outputs,
        )


def image_input(spec: PixelSpec, value_range: Any = None) -> TensorSpec:
    """The ``image`` float32 [-1, rows, cols, channels] input that ``spec`` produces."""
    rows, cols = spec.size if spec.size is not None else (None, None)
    return TensorSpec("image", (-1, rows, cols, spec.channels), "float32", value_range)


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON schema of the current version (``contract.schema.json``)."""
    text = resources.files("medflow.core").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema())
    return Draft202012Validator(schema())


def _validate(d: Mapping[str, Any], source: str) -> None:
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(d))
    if error is None:
        return
    where = error.json_path if error.json_path != "$" else "top level"
    message = " ".join(error.message.split())
    if len(message) > 200:
        message = message[:197] + "..."
    raise ConfigError(f"{source}: {where}: {message}; {_FIX}")
