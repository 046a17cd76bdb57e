"""Platform code dispatches on the contract's task and names none (issue 16): the names of the
installed task plug-ins appear in code only inside their own packages.

Code means names and string literals; comments and docstrings may name tasks as examples.
The DICOM SEG writer and reader (``components/dicom``) are outside the check: "Segmentation"
is a DICOM IOD there (highdicom's ``hd.seg.Segmentation``), not a medflow task.
"""

from __future__ import annotations

import io
import re
import token
import tokenize
from pathlib import Path

import pytest

from medflow.core.tasks import DEFAULT_TASK, task_names

REPO = Path(__file__).resolve().parents[2]
PLATFORM = (
    "medflow/cli.py",
    "medflow/commands",
    "medflow/core",
    "medflow/workflows",
    "components/ingest",
    "components/models",
    "components/pusher",
    "components/dicom_example_gen",
    "components/evaluation_results.py",
    "pipelines",
    "serving",
    "dashboard",
)
# TF Serving's own API names (its Classify RPC), which the embedded server implements.
TF_SERVING_TERMS = re.compile(r"^(classification_pb2|Classification(Request|Response|Result))$")
# Modules implementing TF Serving's Classify API: its messages say "classification signature"
# as TF Serving's do, so only their names are checked, not their strings.
TF_SERVING_API = {"serving/inference.py", "serving/rest.py"}


def _files() -> list[Path]:
    out = []
    for entry in PLATFORM:
        path = REPO / entry
        out += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return out


def _words(text: str) -> set[str]:
    """Lower-case words of an identifier or string (split on non-letters and camelCase)."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    return {w.lower() for w in re.split(r"[^A-Za-z]+", text) if w}


def _docstring_lines(source: str) -> set[int]:
    """Start lines of string tokens that are docstrings (first statement of a block)."""
    lines = set()
    previous = token.NEWLINE
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == token.STRING and previous in (token.NEWLINE, token.INDENT, token.DEDENT):
            lines.add(tok.start[0])
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous = tok.type
    return lines


def task_mentions(path: Path, names: set[str], root: Path = REPO) -> list[str]:
    """``file:line: source line`` for every name or non-docstring string naming a task."""
    source = path.read_text()
    lines = source.splitlines()
    docstrings = _docstring_lines(source)
    api_strings = str(path.relative_to(root)) in TF_SERVING_API
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == token.STRING and (tok.start[0] in docstrings or api_strings):
            continue
        if tok.type not in (token.NAME, token.STRING) or TF_SERVING_TERMS.match(tok.string):
            continue
        if _words(tok.string) & names:
            line = lines[tok.start[0] - 1].strip()
            found.append(f"{path.relative_to(root)}:{tok.start[0]}: {line}")
    return found


def test_the_default_task_is_named_in_one_place_only():
    assert DEFAULT_TASK in task_names()


def test_platform_code_names_no_task():
    names = set(task_names())
    assert {"classification", "segmentation"} <= names
    mentions = [m for f in _files() for m in task_mentions(f, names)]
    default = [m for m in mentions if re.match(r"medflow/core/tasks\.py:\d+: DEFAULT_TASK = ", m)]
    assert len(default) == 1
    assert [m for m in mentions if m not in default] == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('if task == "segmentation":\n    pass\n', 1),
        ("def is_segmentation(self):\n    return 1\n", 1),
        ('"""Segmentation masks are drawn."""\nx = 1  # a segmentation note\n', 0),
        ("import classification_pb2\n", 0),
    ],
)
def test_the_check_catches_task_branches_and_spares_prose(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert len(task_mentions(path, {"classification", "segmentation"}, tmp_path)) == expected
