"""Writing files so that a reader never sees half of one: a temporary file beside the
target, then ``os.replace`` (atomic on POSIX within one file system)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | str, *, prefix: str | None = None) -> None:
    """Writes ``data`` (text as UTF-8) to ``path`` via a temporary file in the same folder.

    Args:
        prefix: name prefix of the temporary file (default ``.<name>.``), e.g. one that a
            cleanup of files left by a killed process recognises.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
