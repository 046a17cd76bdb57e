"""Password policy for local users, and private files for a SQLite review store.

Passwords: at least 12 characters (at most 72 bytes, bcrypt's limit), not the user name,
not a common password (a short built-in list, also with digits or ``!`` appended).

Store files: medflow creates a SQLite store with mode 0600 and the folders it creates for it
with 0700; an existing store file (or its journal) that others may read is tightened to the
owner's bits on open, with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from medflow.core.errors import InputError

log = logging.getLogger(__name__)

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_BYTES = 72  # bcrypt ignores the rest
COMMON_PASSWORDS = frozenset(
    {
        "password", "passw0rd", "p@ssw0rd", "password123", "123456789012", "1234567890",
        "123456789", "12345678", "123456", "qwertyuiop", "qwertyuiop12", "qwerty", "asdfghjkl",
        "1q2w3e4r5t6y", "letmein", "welcome", "changeme", "iloveyou", "admin", "administrator",
        "root", "secret", "monkey", "dragon", "football", "baseball", "sunshine", "princess",
        "trustno1", "abc123", "abcdefghijkl", "medflow", "streamlit", "doctor", "hospital",
        "radiology", "letmeinplease", "correcthorsebatterystaple",
    }
)  # fmt: skip
_SIDE_FILES = ("-journal", "-wal", "-shm")


def check_password(username: str, password: str) -> None:
    """Refuses a password the policy does not allow.

    Raises:
        InputError: one line naming the rule the password breaks.
    """
    folded = password.casefold()
    if folded in COMMON_PASSWORDS or folded.rstrip("0123456789!") in COMMON_PASSWORDS:
        raise InputError("password refused: it is a common password; choose another")
    if folded == username.casefold():
        raise InputError("password refused: it must not be the user name")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InputError(f"password refused: it must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise InputError(f"password refused: it must be at most {MAX_PASSWORD_BYTES} bytes long")


def prepare_sqlite_file(database: str | Path) -> None:
    """Creates the store file (0600) and its missing folders (0700), or tightens an existing
    file that group or others may access (warning)."""
    path = Path(database)
    _make_private_folders(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for each in (path, *(Path(f"{path}{suffix}") for suffix in _SIDE_FILES)):
            _tighten(each)
        return
    try:
        os.fchmod(fd, 0o600)  # exactly, whatever the umask
    finally:
        os.close(fd)


def _make_private_folders(folder: Path) -> None:
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        each.mkdir(mode=0o700, exist_ok=True)
        os.chmod(each, 0o700)


def _tighten(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(path, mode & 0o700)
    except OSError as exc:
        log.warning("review store file %s is accessible to others (mode %04o) and cannot be "
                    "tightened: %s; chmod 600 it", path, mode, exc)  # fmt: skip
        return
    log.warning("review store file %s was accessible to others (mode %04o); now %04o",
                path, mode, mode & 0o700)  # fmt: skip
