"""Schema 0 of the model contract (the untyped dict of the first Pusher), migrated to the
JSON form of the current schema when such a contract is read (:meth:`ModelContract.from_dict`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medflow.core.contract import _FIX, ModelContract, image_input
from medflow.core.errors import ConfigError
from medflow.core.pixel_spec import PixelSpec


def migrate_v0(d: Mapping[str, Any], source: str = "model contract") -> dict[str, Any]:
    """Schema 0 (the untyped dict of the first Pusher) -> the JSON form of schema 1.

    ``preprocessing`` ({size, channels}, sometimes the whole PixelSpec) becomes
    ``pixel_spec`` with PixelSpec's defaults; without it the size and channels come from
    ``serving_default``'s ``image`` input. The top-level ``value_range`` moves to that
    input. Keys that schema 1 does not know are dropped.

    Raises:
        ConfigError: a ``preprocessing`` that :class:`PixelSpec` refuses (named by ``source``).
    """
    signatures = d.get("signatures") if isinstance(d.get("signatures"), Mapping) else {}
    default = signatures.get("serving_default")
    default = default if isinstance(default, Mapping) else {}
    inputs = default.get("inputs")
    image = inputs.get("image") if isinstance(inputs, Mapping) else None
    prep = d.get("pixel_spec") or d.get("preprocessing")
    if not isinstance(prep, Mapping):
        prep = _prep_from_image(image)
    try:
        spec = PixelSpec.from_dict(prep)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source} (schema 0): preprocessing {prep}: {exc}; {_FIX}") from exc
    value_range = d.get("value_range")
    if not isinstance(value_range, list | tuple) or all(v is None for v in value_range):
        value_range = None
    contract = ModelContract(pixel_spec=spec, inputs=(image_input(spec, value_range),))
    try:
        contract = contract.with_signatures(signatures) if default else contract
    except (KeyError, TypeError, AttributeError):
        pass  # a malformed signature: the schema check after migration names it
    evaluation = d.get("evaluation")
    evaluation_uri = d.get("evaluation_uri") or (
        evaluation.get("uri") if isinstance(evaluation, Mapping) else None
    )
    out = contract.to_dict()
    out.update({k: d[k] for k in _V0_KEPT if k in d})
    if "version" in d:
        out["version"] = str(d["version"])
    if isinstance(evaluation_uri, str):
        out["evaluation_uri"] = evaluation_uri
    return out


_V0_KEPT = (
    "model_name",
    "task",
    "labels",
    "intended_use",
    "training_data",
    "metrics",
    "model_sha256",
    "signatures",
    "created_by",
)


def _prep_from_image(image: Any) -> dict[str, Any]:
    shape = image.get("shape") if isinstance(image, Mapping) else None
    if isinstance(shape, list) and len(shape) == 4 and all(isinstance(n, int) for n in shape):
        if min(shape[1:]) >= 1:
            return {"size": shape[1:3], "channels": shape[3]}
    return {"size": None}
