"""Model code run by Transform and Trainer (no orchestration imports)."""

from pathlib import Path

# The Transform module file every task's pipeline hands to tfx.components.Transform.
TRANSFORM_MODULE = str(Path(__file__).resolve().with_name("preprocessing.py"))
