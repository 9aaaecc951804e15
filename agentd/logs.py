"""Logging set-up: the journal under systemd, timestamped stderr elsewhere; secrets redacted.

Redaction is a filter on every handler, so a key that reaches a message by any route (an
exception text, a repr of a handshake header, websockets' own debug lines) is replaced before
it is written anywhere; the same :func:`redact` cleans every answer of the control socket.
The filter also escapes control characters, so server text (an error message, a transcript)
cannot forge a log line with a newline or rewrite the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

SYSLOG_IDENTIFIER = "agentd"
REDACTED = "***"
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never let ``value`` be written by any handler set up here."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):  # a longer secret may hold a shorter
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_obj(value: Any) -> Any:
    """``value`` (an answer about to leave the process) with every string in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_obj(k): redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """One printable line: newlines, other control and format characters (U+202E …)
    become visible escapes; printable Unicode (a Chinese transcript) is kept as is."""
    if text.isprintable():
        return text
    return "".join(
        c
        if c.isprintable()
        else _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        for c in text
    )


class RedactFilter(logging.Filter):
    """Secrets out, control characters escaped, in every record (tracebacks keep their
    lines but lose the secrets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        record.msg, record.args = escape(redact(message)), None
        if not _secrets:
            return True
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


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` is the stream systemd connected to journald: JOURNAL_STREAM names its
    device and inode (systemd.exec(5)), so a redirected stderr is told apart."""
    env = os.environ if environ is None else environ
    try:
        dev, ino = (int(part) for part in env.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald files a record under (``journalctl -p``)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


class JournalFormatter(logging.Formatter):
    """stderr lines for journald: ``<N>`` priority on each line (journald reads the prefix of
    every line, and splits a traceback into lines), no timestamp (the journal stamps them).

    This replaces systemd-python's JournalHandler, which had to be compiled on every device; the
    unit's SyslogIdentifier=agentd names the lines as the handler did."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def setup_logging(level: str = "info", *, journal: bool | None = None) -> logging.Handler:
    """Configure the root logger once (idempotent: a reload may call it again). Everything goes
    to stderr: for journald when stderr is its stream (or ``journal=True``), else timestamped."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_agentd", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal() if journal is None else journal:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter())
    handler._agentd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    set_level(level)
    return handler


def set_level(level: str) -> None:
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
