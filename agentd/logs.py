"""Logging set-up: the journal under systemd, timestamped stderr elsewhere; secrets redacted.

Redaction is a filter on every handler, so a key that reaches a message by any route (an
exception text, a repr of a handshake header) is replaced before it is written anywhere.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

SYSLOG_IDENTIFIER = "agentd"
REDACTED = "***"
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never let ``value`` be written by any handler set up here."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def _journal_handler() -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)


def setup_logging(level: str = "info", *, journal: bool | None = None) -> logging.Handler:
    """Configure the root logger once (idempotent: a reload may call it again)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_agentd", False)]:
        root.removeHandler(old)
    use_journal = under_systemd() if journal is None else journal
    handler = _journal_handler() if use_journal else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.addFilter(RedactFilter())
    handler._agentd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    set_level(level)
    return handler


def set_level(level: str) -> None:
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
