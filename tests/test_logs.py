"""Logging: journal under systemd, stderr elsewhere, secrets never written."""

from __future__ import annotations

import io
import logging

import pytest

from agentd import logs


def test_journal_is_chosen_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    assert logs.under_systemd({"JOURNAL_STREAM": "8:1234"})
    assert logs.under_systemd({"INVOCATION_ID": "abc"})
    assert not logs.under_systemd({})
    handler = logs.setup_logging("debug", journal=True)
    try:
        from systemd.journal import JournalHandler

        assert isinstance(handler, JournalHandler)
        assert logging.getLogger().level == logging.DEBUG
    finally:
        logging.getLogger().removeHandler(handler)


def test_stderr_handler_has_timestamps_and_redacts(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    handler = logs.setup_logging("info", journal=False)
    try:
        logs.register_secret("sk-very-secret-123")
        log = logging.getLogger("agentd.test")
        log.info("header Authorization: Bearer %s", "sk-very-secret-123")
        try:
            raise RuntimeError("handshake failed with key sk-very-secret-123")
        except RuntimeError:
            log.exception("connect failed")
        text = stream.getvalue()
        assert "sk-very-secret-123" not in text
        assert "Bearer ***" in text and "with key ***" in text
        assert text[:4].isdigit()  # asctime first
    finally:
        logging.getLogger().removeHandler(handler)


def test_setup_is_idempotent() -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    h1 = logs.setup_logging("info", journal=False)
    h2 = logs.setup_logging("warning", journal=False)
    try:
        assert len(root.handlers) == before + 1
        assert root.level == logging.WARNING
    finally:
        root.removeHandler(h1)
        root.removeHandler(h2)
