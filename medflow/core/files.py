"""Writing files so that a reader never sees half of one: a temporary file beside the
target, then ``os.replace`` (atomic on POSIX within one file system). Every writer of a
result file in medflow goes through :func:`atomic_open` or :func:`atomic_write`."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "wb", *, prefix: str | None = None, **open_args: Any
) -> Iterator[IO]:
    """Opens a temporary file beside ``path`` for writing; on a clean exit it replaces
    ``path``, on an exception it is removed and ``path`` is left as it was.

    Args:
        mode: ``"wb"`` or ``"w"`` (then ``open_args`` such as ``encoding``, ``newline``).
        prefix: name prefix of the temporary file (default ``.<name>.``), e.g. one that a
            cleanup of files left by a killed process recognises.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_args) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str, *, prefix: str | None = None) -> None:
    """Writes ``data`` (text as UTF-8) to ``path`` via a temporary file in the same folder."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_open(path, "wb", prefix=prefix) as fh:
        fh.write(payload)


def swap_in_folders(staging: Path, out: Path, names: Sequence[str]) -> None:
    """Moves each complete ``staging/<name>`` to ``out/<name>``; an earlier ``out/<name>``
    goes into ``staging`` (removed with it), so a reader sees the old folder or the new one,
    never a mix. A name missing from ``staging`` leaves ``out`` without it."""
    trash = staging / f".old-{uuid.uuid4().hex}"
    trash.mkdir()
    for name in names:
        new, final = staging / name, out / name
        if final.exists():
            final.rename(trash / name)
        if new.exists():
            new.rename(final)
