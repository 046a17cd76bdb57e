"""Stack differences below the model layer (README "Stacks"), in one place for core, serving,
dashboard and ingest (which may not import ``medflow.components.models.compat``).

default: protobuf 3.20 (TFX 1.16)    next: protobuf 6 (TFX 1.21)

- protobuf 4.21+ builds a message class with ``message_factory.GetMessageClass``; protobuf 6
  removed ``MessageFactory.GetPrototype``, the only way in 3.20. :func:`message_class`.
- :func:`stack_name`: which of the two the running environment is (by its TFX), for the few
  checks whose reference data were recorded on one stack.
- ``json_format.MessageToDict``'s ``including_default_value_fields`` is
  ``always_print_fields_with_no_presence`` since protobuf 5.26. :func:`message_to_dict`.
"""

from __future__ import annotations

from typing import Any


def message_class(descriptor: Any) -> type:
    """The generated message class of a protobuf ``Descriptor`` (built from a runtime pool)."""
    from google.protobuf import message_factory

    get_message_class = getattr(message_factory, "GetMessageClass", None)
    if get_message_class is not None:  # protobuf >= 4.21 (next stack)
        return get_message_class(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def message_to_dict(message: Any) -> dict:
    """``json_format.MessageToDict`` with proto field names and fields at their default value
    printed too (TF Serving's REST API shape). protobuf 5.26 renamed the option
    ``including_default_value_fields`` to ``always_print_fields_with_no_presence``."""
    import inspect

    from google.protobuf import json_format

    params = inspect.signature(json_format.MessageToDict).parameters
    option = (
        "always_print_fields_with_no_presence"
        if "always_print_fields_with_no_presence" in params
        else "including_default_value_fields"
    )
    return json_format.MessageToDict(message, preserving_proto_field_name=True, **{option: True})


def stack_name() -> str:
    """``"default"`` (TFX 1.16) or ``"next"`` (TFX 1.21+), from installed metadata (no import)."""
    from importlib.metadata import version

    major, minor = (int(p) for p in version("tfx").split(".")[:2])
    return "next" if (major, minor) >= (1, 21) else "default"
