"""Where the two pinned stacks differ in behaviour (README "Stacks"), handled in one place.

default: Python 3.10, TFX 1.16, TFMA 0.47 (requirements.lock)
next:    Python 3.12/3.13, TFX 1.21, TFMA 0.52 (requirements-next.lock)

Differences found and how each is met (the rest of the code is the same on both):

- TFMA 0.52 no longer exports its config protos (``EvalConfig``, ``MetricThreshold``,
  ``GenericValueThreshold``, ...) at the top level of ``tensorflow_model_analysis``. TFX 1.21
  puts them back when ``tfx.types.standard_component_specs`` is imported, so on the next stack
  ``tfma.MetricThreshold`` existed or not depending on what the process imported first (a
  pipeline run: yes; a unit test or a CLI building an EvalConfig before TFX: AttributeError).
  :data:`tfma` is ``tensorflow_model_analysis`` with those names always there (taken from
  ``tensorflow_model_analysis.proto.config_pb2``, where both versions keep them).
- TensorFlow 2.20+ no longer installs TensorBoard (the Trainer's TensorBoard callback needs
  it): a dependency of the next lock (``requirements-next.in``), not code.
- TFX 1.21 declares kfp only for Python < 3.12: the next lock asks for kfp and
  kfp-pipeline-spec itself (``requirements-next.in``); the compiled spec is the same format.
- Python 3.11+ has ``tomllib``; 3.10 has ``tomli`` (from pytest): the two tests that read
  ``pyproject.toml`` choose by version.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# The config protos every task's EvalConfig and blessing thresholds are built from.
TFMA_CONFIG_NAMES = (
    "EvalConfig",
    "ModelSpec",
    "SlicingSpec",
    "MetricsSpec",
    "MetricConfig",
    "MetricThreshold",
    "GenericValueThreshold",
    "GenericChangeThreshold",
    "MetricDirection",
)


def tfma_module() -> ModuleType:
    """``tensorflow_model_analysis`` with :data:`TFMA_CONFIG_NAMES` at its top level."""
    module = importlib.import_module("tensorflow_model_analysis")
    config_pb2 = importlib.import_module("tensorflow_model_analysis.proto.config_pb2")
    for name in TFMA_CONFIG_NAMES:
        if not hasattr(module, name):
            setattr(module, name, getattr(config_pb2, name))
    return module


class _LazyTFMA:
    """Stands for the TFMA module without importing it (seconds) until first used, so
    modules can ``from medflow.components.models.compat import tfma`` at the top."""

    def __getattr__(self, name: str) -> Any:
        return getattr(tfma_module(), name)

    def __repr__(self) -> str:
        return "<tensorflow_model_analysis (medflow.components.models.compat)>"


tfma: Any = _LazyTFMA()
