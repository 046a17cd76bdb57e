"""TF Serving's own model-server tests, unmodified, against ``medflow-model-server``.

``../shared/tfserving`` (or ``$MEDFLOW_SHARED_TFSERVING``) holds TF Serving's
``tensorflow_model_server_test.py`` with its test base, client and test data, as copied from
tensorflow/serving (README there). This module lays out the Bazel runfiles tree those tests
expect in a temporary folder -- ``$TEST_SRCDIR/tf_serving/tensorflow_serving/...`` made of
symlinks to the shared copy, with ``model_servers/tensorflow_model_server`` a two-line script
that execs the ``medflow-model-server`` console script -- and runs their file once (as
``python tensorflow_model_server_test.py``, through absltest, JUnit XML out) with
``tensorflow_serving.model_servers.test_util`` added to the installed ``tensorflow_serving``
package. Each of their tests is one pytest item reading its own result.

Tests that cannot pass here are listed in ``CANNOT_PASS`` with the reason, as strict xfails: one
that starts to pass fails this module, so the list stays true.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.test_serving_helpers import SHARED_TFSERVING

TEST_FILE = SHARED_TFSERVING / "tensorflow_serving/model_servers/tensorflow_model_server_test.py"
TEST_CLASS = "TensorflowModelServerTest"
RUN_TIMEOUT_S = 900

# Tests that must start in a fresh process, as a Bazel shard would run them.
OWN_PROCESS = {
    # SetVirtualCpus(2) fails once TensorFlow's runtime is initialized (its own comment says
    # so), and the tests before it in the same process initialize it.
    "test_distrat_sequential_keras_saved_model_save",
}

CANNOT_PASS = {
    "test_tf_text": "the copy lacks tf_text_regression/01/saved_model.pb (shared/tfserving README), "
    "so there is no model to load; the real binary fails the same way on this copy",
}


def _their_tests() -> list[str]:
    """Names of the test methods of their TestCase, in file order (read, not imported)."""
    if not TEST_FILE.is_file():
        return []
    tree = ast.parse(TEST_FILE.read_text())
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == TEST_CLASS]
    return [
        f.name for f in cls.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test")
    ]


TESTS = _their_tests()

# Run by the harness's Python: put their test_util next to the installed tensorflow_serving
# package (a regular package, so the folder is added to its __path__), then run their file as
# __main__ exactly as Bazel's py_test would.
RUNNER = textwrap.dedent(
    """
    import os, runpy, sys
    import tensorflow_serving
    tensorflow_serving.__path__.append(
        os.path.join(os.environ["TEST_SRCDIR"], "tf_serving", "tensorflow_serving"))
    test_file = sys.argv[1]
    sys.argv = [test_file] + sys.argv[2:]
    runpy.run_path(test_file, run_name="__main__")
    """
)


def _runfiles(root: Path) -> Path:
    """$TEST_SRCDIR with tf_serving/tensorflow_serving/{model_servers,servables} laid out."""
    package = root / "tf_serving" / "tensorflow_serving"
    servers = package / "model_servers"
    servers.mkdir(parents=True)
    their_servers = SHARED_TFSERVING / "tensorflow_serving" / "model_servers"
    for entry in their_servers.iterdir():
        (servers / entry.name).symlink_to(entry)
    (package / "servables").symlink_to(SHARED_TFSERVING / "tensorflow_serving" / "servables")
    binary = servers / "tensorflow_model_server"
    console_script = Path(sys.executable).with_name("medflow-model-server")
    if not console_script.is_file():
        pytest.fail(
            f"{console_script} is missing: reinstall medflow in this environment "
            "(uv pip install --no-deps -e .) so that its console scripts exist"
        )
    binary.write_text(f'#!/bin/sh\nexec "{console_script}" "$@"\n')
    binary.chmod(0o755)
    return root


def _selected(session: pytest.Session) -> list[str]:
    names = []
    for item in session.items:
        if item.path == Path(__file__) and hasattr(item, "callspec"):
            names.append(item.callspec.params["name"])
    return names or TESTS


def _outcomes(xml_file: Path) -> dict[str, tuple[str, str]]:
    """{test name: (passed | failed | error | skipped, message)} from absltest's JUnit XML."""
    results = {}
    for case in ET.parse(xml_file).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = "failed" if kind == "failure" else kind
                message = (node.get("message") or "") + "\n" + (node.text or "")
                break
        results[case.get("name")] = (outcome, message.strip())
    return results


def _run(names: list[str], root: Path, work: Path) -> dict[str, tuple[str, str]]:
    """Run some of their tests in one process; their outcomes."""
    xml_file = work / "results.xml"
    env = {
        **os.environ,
        "TEST_SRCDIR": str(root),
        "TEST_TMPDIR": str(work / "tmp"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # Their Keras tests build models with the Keras 2 API (Input(name='x') becomes the
        # signature's input 'x'); TensorFlow 2.16's tf.keras is Keras 3 unless told otherwise.
        "TF_USE_LEGACY_KERAS": "1",
        "PYTHONPATH": "",
    }
    log = work / "log.txt"
    (work / "tmp").mkdir()
    (work / "runner.py").write_text(RUNNER)
    argv = [
        sys.executable,
        str(work / "runner.py"),
        str(TEST_FILE),
        f"--xml_output_file={xml_file}",
    ]
    with log.open("wb") as out:
        proc = subprocess.run(
            argv + [f"{TEST_CLASS}.{n}" for n in names],
            env=env,
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
    if not xml_file.is_file():
        tail = log.read_text(errors="replace")[-4000:]
        pytest.fail(f"their test file did not run (exit {proc.returncode}); log {log}:\n{tail}")
    return _outcomes(xml_file)


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict[str, tuple[str, str]]:
    root = _runfiles(tmp_path_factory.mktemp("runfiles"))
    selected = _selected(request.session)
    groups = [[n for n in selected if n not in OWN_PROCESS]]
    groups += [[n] for n in selected if n in OWN_PROCESS]
    outcomes: dict[str, tuple[str, str]] = {}
    for names in filter(None, groups):
        outcomes.update(_run(names, root, tmp_path_factory.mktemp("tfserving-run")))
    return outcomes


def _params():
    for name in TESTS:
        marks = []
        if name in CANNOT_PASS:
            marks.append(pytest.mark.xfail(reason=CANNOT_PASS[name], strict=True))
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
@pytest.mark.parametrize("name", list(_params()))
def test_tf_serving_model_server_test(results, name):
    assert name in results, f"{name} did not run (see the run's log)"
    outcome, message = results[name]
    assert outcome == "passed", f"{name} {outcome}:\n{message[-3000:]}"


def test_their_file_is_there_with_its_30_tests():
    if not TEST_FILE.is_file():
        pytest.skip(f"TF Serving's tests not found at {TEST_FILE} (set MEDFLOW_SHARED_TFSERVING)")
    assert len(TESTS) == 30, TESTS
    assert set(CANNOT_PASS) <= set(TESTS)
