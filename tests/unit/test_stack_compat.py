"""The stack differences handled in components/models/compat.py (issue 26), checked on
whichever stack runs the tests (`make test` here; `make test-next-stack` in Debian 13)."""

from __future__ import annotations

import subprocess
import sys

from medflow.components.models import compat

# A fresh process: which TFMA names exist depended on what was imported first (TFX 1.21 adds
# TFMA 0.52's missing config names when it is imported), so nothing else is imported here.
FRESH = """
import sys
from medflow.components.models.compat import TFMA_CONFIG_NAMES, tfma
assert "tensorflow_model_analysis" not in sys.modules, "compat imported TFMA eagerly"
missing = [n for n in TFMA_CONFIG_NAMES if not hasattr(tfma, n)]
assert not missing, missing
assert "tfx" not in sys.modules, "TFX was imported: the check would prove nothing"
threshold = tfma.MetricThreshold(
    value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.9}),
    change_threshold=tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -0.02}
    ),
)
config = tfma.EvalConfig(metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(
    class_name="AUC", threshold=threshold)])])
print(tfma.__version__, config.metrics_specs[0].metrics[0].threshold.value_threshold.lower_bound.value)
"""


def test_tfma_config_names_without_tfx_imported_first():
    out = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    version, lower = out.stdout.split()[-2:]
    assert float(lower) == 0.9
    # The stack this runs on: TFMA 0.47 (default) or 0.52 (next).
    assert version.startswith(("0.47.", "0.52.")), version


def test_tfma_proxy_is_the_module():
    import tensorflow_model_analysis

    assert compat.tfma.load_eval_result is tensorflow_model_analysis.load_eval_result
    assert compat.tfma.metrics is tensorflow_model_analysis.metrics
    assert compat.tfma_module() is tensorflow_model_analysis


def test_message_class_from_a_runtime_descriptor_pool():
    """protobuf 3.20 (default) builds it with MessageFactory.GetPrototype, protobuf 6 (next)
    with GetMessageClass: the same class either way (medflow/core/compat.py)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    from medflow.core.compat import message_class

    fdp = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t", syntax="proto3")
    fdp.message_type.add(name="M").field.add(
        name="n", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = message_class(pool.FindMessageTypeByName("t.M"))
    assert cls.FromString(cls(n=7).SerializeToString()).n == 7
    assert cls.DESCRIPTOR.full_name == "t.M"


def test_message_to_dict_prints_default_fields_with_proto_names():
    """protobuf 3.20: including_default_value_fields; 6: always_print_fields_with_no_presence."""
    from tensorflow_serving.apis import model_pb2

    from medflow.core.compat import message_to_dict

    assert message_to_dict(model_pb2.ModelSpec(name="m")) == {
        "name": "m",
        "signature_name": "",
    }
