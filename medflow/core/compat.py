"""Stack differences below the model layer (README "Stacks"), in one place for core, serving,
dashboard and ingest (which may not import ``medflow.components.models.compat``).

default: protobuf 3.20 (TFX 1.16)    next: protobuf 6 (TFX 1.21)

- protobuf 4.21+ builds a message class with ``message_factory.GetMessageClass``; protobuf 6
  removed ``MessageFactory.GetPrototype``, the only way in 3.20. :func:`message_class`.
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
