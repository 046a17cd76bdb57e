"""TF1 SavedModels (no object graph) run the way TF Serving runs every SavedModel: the
MetaGraph loaded into a Session, each signature a callable of feed and fetch tensor names.

``tf.saved_model.load`` re-traces a TF1 graph's signatures as functions, and fails on graphs
TF Serving loads fine (``saved_model_half_plus_three``: a ParseExample fed from a placeholder of
unknown rank). A Session callable does not re-trace and, like ``Session::Run``, leaves shapes to
the graph.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


def is_tf1_saved_model(meta_graph) -> bool:
    """True for a MetaGraph without an object graph (written by TF1's SavedModelBuilder)."""
    return not meta_graph.HasField("object_graph_def") or not meta_graph.object_graph_def.nodes


class SessionRunner:
    """A TF1 SavedModel's 'serve' MetaGraph in its own Graph and Session."""

    def __init__(self, path: Path, signature_defs: dict) -> None:
        import tensorflow as tf

        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        from tensorflow.python.util import deprecation

        # (TF1's loader is deprecated in favour of tf.saved_model.load, which cannot load
        # every TF1 graph; see the module docstring.)
        with self._graph.as_default(), deprecation.silence():
            tf.compat.v1.saved_model.loader.load(self._session, ["serve"], str(path))
        self._signature_defs = signature_defs
        self._callables: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def signatures(self) -> set[str]:
        return set(self._signature_defs)

    def _callable(self, key: str, feeds: tuple[str, ...], fetches: tuple[str, ...]):
        from tensorflow.core.protobuf import config_pb2

        cache_key = (key, feeds, fetches)
        with self._lock:
            if cache_key not in self._callables:
                sig = self._signature_defs[key]
                options = config_pb2.CallableOptions(
                    feed=[sig.inputs[n].name for n in feeds],
                    fetch=[sig.outputs[n].name for n in fetches],
                )
                self._callables[cache_key] = self._session._make_callable_from_options(options)
            return self._callables[cache_key]

    def __call__(self, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = tuple(sorted(inputs))
        fetches = tuple(sorted(self._signature_defs[key].outputs))
        values = self._callable(key, feeds, fetches)(*[inputs[n] for n in feeds])
        return dict(zip(fetches, values, strict=True))
