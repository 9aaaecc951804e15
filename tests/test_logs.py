"""Logging: journald's stderr stream with priority prefixes under systemd, timestamped stderr\nelsewhere, secrets never written."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentd import logs


def journal_env(path: Path) -> dict[str, str]:
    """JOURNAL_STREAM as systemd sets it for a unit whose stderr is ``path``."""
    st = path.stat()
    return {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_journal_stream_names_the_stderr_it_belongs_to(tmp_path: Path) -> None:
    stream, other = tmp_path / "stream", tmp_path / "other"
    stream.touch()
    other.touch()
    with stream.open("w") as f:
        fd = f.fileno()
        assert logs.stderr_is_journal(journal_env(stream), fd)
        assert not logs.stderr_is_journal(journal_env(other), fd)  # stderr redirected elsewhere
        assert not logs.stderr_is_journal({}, fd)
        assert not logs.stderr_is_journal({"JOURNAL_STREAM": "8:x"}, fd)


EMIT = """
import logging
from agentd import logs
logs.setup_logging("debug")
logs.register_secret("sk-very-secret-123")
log = logging.getLogger("agentd.test")
log.debug("debug line")
log.info("info line")
log.warning("warning with key %s", "sk-very-secret-123")
try:
    raise RuntimeError("boom")
except RuntimeError:
    log.exception("error line")
"""


def emit_logs(stderr: Path, env: dict[str, str]) -> list[str]:
    with stderr.open("w") as f:
        subprocess.run([sys.executable, "-c", EMIT], stderr=f, env=env, check=True, timeout=30)
    return stderr.read_text().splitlines()


def test_under_journald_every_line_carries_its_syslog_priority(tmp_path: Path) -> None:
    """journald reads a ``<N>`` prefix on each stderr line (sd-daemon(3)): the priority that
    ``journalctl -p warning`` filters on, with no systemd-python compiled on the device."""
    err = tmp_path / "stderr"
    err.touch()
    lines = emit_logs(err, journal_env(err))
    assert lines[:3] == [
        "<7>agentd.test: debug line",
        "<6>agentd.test: info line",
        "<4>agentd.test: warning with key ***",
    ]
    assert lines[3] == "<3>agentd.test: error line"
    trace = lines[4:]
    assert trace[0] == "<3>Traceback (most recent call last):"
    assert trace[-1] == "<3>RuntimeError: boom"
    assert all(line.startswith("<3>") for line in trace)  # the traceback stays an error


def test_stderr_elsewhere_is_timestamped_without_prefixes(tmp_path: Path) -> None:
    err, other = tmp_path / "stderr", tmp_path / "other"
    err.touch()
    other.touch()
    lines = emit_logs(err, journal_env(other))  # a unit whose stderr was redirected to a file
    assert lines and not any(line.startswith("<") for line in lines)
    assert lines[0][:4].isdigit() and "DEBUG" in lines[0]


def test_unit_names_the_lines_as_the_journal_handler_did() -> None:
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "agentd.service").read_text()
    assert f"SyslogIdentifier={logs.SYSLOG_IDENTIFIER}" in unit.splitlines()
    assert logs.under_systemd({"JOURNAL_STREAM": "8:1234"})
    assert logs.under_systemd({"INVOCATION_ID": "abc"})
    assert not logs.under_systemd({})


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
