"""De-identification key files: the secret lives in a file (mode 0600), never in flags,
pipeline parameters or ML Metadata, where it would be stored in clear."""

from __future__ import annotations

import functools
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medflow.core.errors import ConfigError

# Where `medflow ingest` looks for the key when no --deid-key-file is given, in this order.
KEY_FILE_ENV = "MEDFLOW_DEID_KEY_FILE"
SECRET_ENV = "MEDFLOW_DEID_KEY"


@dataclass(frozen=True)
class DeidKey:
    """The secret that keys pseudonyms, UID remapping and date shifts (keep it safe:
    whoever has it can re-link pseudonyms to identities by trying candidate IDs)."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ConfigError(
                "the de-identification key must be at least 16 bytes; generate one with `medflow deid-key`"
            )

    def digest(self, kind: str, value: str) -> bytes:
        return _hmac_sha256(self.secret, f"{kind}\x00{value}")


@functools.lru_cache(maxsize=8192)
def _hmac_sha256(secret: bytes, message: str) -> bytes:
    """HMAC-SHA256, memoised: a worker meets the same patients, sites and study/series UIDs
    file after file (a pure function of its arguments, so outputs do not change)."""
    return hmac.digest(secret, message.encode(), "sha256")


def load_key_file(path: str | os.PathLike[str]) -> DeidKey:
    """Read a key file (its bytes, trailing newline stripped)."""
    path = Path(path)
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
    except FileNotFoundError:
        raise ConfigError(
            f"de-identification key file {path} does not exist; create one with "
            "`medflow deid-key --out FILE` (keep it: the same key gives the same pseudonyms)"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"de-identification key file {path}: cannot read ({exc.strerror})"
        ) from None
    if len(secret) < 16:
        raise ConfigError(
            f"de-identification key file {path} holds {len(secret)} bytes; need >= 16"
        )
    return DeidKey(secret)


def create_key_file(path: str | os.PathLike[str]) -> Path:
    """Write a new random key (64 hex characters) with mode 0600; refuse to overwrite."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; refusing to overwrite a de-identification key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path


def ensure_key_file(path: str | os.PathLike[str]) -> Path:
    """The key file at ``path``, created on first use (the local runner's default)."""
    path = Path(path)
    if not path.exists():
        create_key_file(path)
    return path


def resolve_key(key_file: str | None, environ: Mapping[str, str] = os.environ) -> DeidKey:
    """The de-identification key from ``key_file``, else the file named by
    ``$MEDFLOW_DEID_KEY_FILE``, else ``$MEDFLOW_DEID_KEY`` itself (the pipeline reads key
    files the same way, so pseudonyms match); there is no default.

    Raises:
        ConfigError: no key given, the file is unreadable, or the key is too short.
    """
    if key_file or environ.get(KEY_FILE_ENV):
        return load_key_file(key_file or environ[KEY_FILE_ENV])
    if not environ.get(SECRET_ENV):
        raise ConfigError(
            f"no de-identification key: pass --deid-key-file FILE or set {KEY_FILE_ENV} or "
            f"{SECRET_ENV} (create a key with `medflow deid-key --out FILE`)"
        )
    secret = environ[SECRET_ENV].rstrip("\r\n").encode()
    if len(secret) < 16:
        raise ConfigError(
            f"${SECRET_ENV}: the de-identification key has {len(secret)} bytes, needs at least "
            "16; create one with `medflow deid-key --out FILE`"
        )
    return DeidKey(secret)
