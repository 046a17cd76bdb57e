"""Redaction of the HTTP libraries' log records: dicomweb_client and urllib3 log request URLs
and searches (UIDs, accession numbers, dates) at INFO/DEBUG; those records are redacted before
any handler sees them, so no patient identifier reaches a log."""

from __future__ import annotations

import logging
import re

_CHATTY_LOGGERS = ("dicomweb_client.web", "dicomweb_client.api", "urllib3.connectionpool")
_UID_TEXT = re.compile(r"(?<![\d.])(?=[\d.]{16,})\d+(?:\.\d+)+")
_QUERY_TEXT = re.compile(r"\?[^\s\"']*|(?i:bearer)\s+\S+|\{[^{}]*\}")


class _Redact(logging.Filter):
    """Replaces a record's UIDs, query strings, search filters and tokens by placeholders."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        redacted = _UID_TEXT.sub("<uid>", _QUERY_TEXT.sub("<redacted>", text))
        if redacted != text:
            record.msg, record.args = redacted, None
        return True


def redact_http_logs() -> None:
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Redact) for f in logger.filters):
            logger.addFilter(_Redact())
