"""Secrets stay secret (issue 18, point 6): the key and custom header values never reach a
log line (DEBUG and websockets' own handshake lines included), `ctl status`, a reload answer,
STATUS= or an error string, even when a proxy echoes them back; ws:// only to loopback;
`{machine_id}` is an app-specific id; server text cannot forge log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentd import config as C
from agentd import control, logs
from agentd.config import placeholders
from agentd.notify import Notifier
from agentd.realtime import client_events as ce
from agentd.realtime.connection import Link
from agentd.sim import Simulator
from tests.harness import Harness
from tests.test_protocol import Probe, cfg_for, start_link, stop_link

KEY = "sk-proj-SECRETSECRET1234567890abcdef"
HEADER_VALUE = "tok-HEADERSECRET-0987654321"


@pytest.fixture
def stderr_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The daemon's own stderr handler (logs.setup_logging) at DEBUG, written to a buffer."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    handler = logs.setup_logging("debug", journal=False)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


# ---------------------------------------------------------------- a proxy that echoes the key


@pytest.mark.parametrize("reject", [None, 400], ids=["101-echo", "400-echo"])
async def test_proxy_echoing_subprotocols_never_leaks_the_key(
    stderr_log: io.StringIO, reject: int | None
) -> None:
    """xStar puts the key in a subprotocol; a proxy echoing all of them (in the 101, or in
    a rejection's body and headers) made websockets' error text carry the key."""
    async with Simulator("xstar", pace=0) as sim:
        sim.faults.echo_subprotocols = True
        sim.faults.reject_status = reject
        link, probe, task = await start_link(sim, "xstar", key=KEY)
        await probe.until(lambda: len(probe.states) >= 2)
        await stop_link(link, task)
    offered = sim.handshakes[0].headers["Sec-WebSocket-Protocol"]
    assert KEY in offered  # the proxy really had it to echo
    errors = [s.error or "" for s in probe.states] + [link.last_error or ""]
    text = stderr_log.getvalue()
    if reject is None:
        assert "Sec-WebSocket-Protocol" in errors[0]
        assert "openai-insecure-api-key.***" in errors[0]
    else:
        assert "HTTP 400" in errors[0]
        assert "X-Offered-Subprotocols: realtime, openai-insecure-api-key.***" in text
    for where in [*errors, text]:
        assert KEY not in where and KEY[8:20] not in where


@pytest.mark.parametrize(
    "harness", [{"dialect": "xstar", "api__api_key": KEY}], indirect=True, ids=["xstar"]
)
async def test_ctl_status_reload_and_status_line_never_carry_the_key(
    harness: Harness, all_logs: pytest.LogCaptureFixture
) -> None:
    """The daemon end to end: the echoing proxy's error reaches `last_error`; `ctl status`
    over the real socket, a reload answer and every STATUS= sent must not hold the key."""
    h = harness
    sock = h.daemon.cfg.control.socket
    h.sim.faults.echo_subprotocols = True
    h.sim.drop_all()
    await h.until(lambda: "Sec-WebSocket-Protocol" in (h.daemon.status()["last_error"] or ""))
    raw = await asyncio.to_thread(_raw_request, sock, b'{"cmd": "status"}\n')
    status = json.loads(raw)
    assert "openai-insecure-api-key.***" in status["last_error"]
    # a config problem that quotes a secret-bearing value: the reload answer is redacted too
    cfg_path = h.daemon.config_path
    data = yaml.safe_load(cfg_path.read_text())
    data["api"]["url"] = f"https://example.invalid/?key={KEY}"
    cfg_path.write_text(yaml.safe_dump(data))
    reload_raw = await asyncio.to_thread(_raw_request, sock, b'{"cmd": "reload"}\n')
    answer = json.loads(reload_raw)
    assert answer["ok"] is False and any("api.url" in p for p in answer["problems"])
    notified = "\n".join(h.notify.drain())
    for where in (raw.decode(), reload_raw.decode(), notified, all_logs.text):
        assert KEY not in where
    h.sim.faults.echo_subprotocols = False


def _raw_request(path: str, line: bytes) -> bytes:
    """The exact bytes the control socket answers (what `agentd ctl` prints)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(line)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf


# ---------------------------------------------------------------- custom headers


async def test_custom_header_values_are_redacted_at_debug(stderr_log: io.StringIO) -> None:
    """api.headers values go into the handshake; websockets logs request headers at DEBUG."""
    async with Simulator("openai", pace=0) as sim:
        cfg = cfg_for(
            "openai",
            api__url=sim.url,
            api__headers={"X-Api-Token": HEADER_VALUE, "X-Org": "org-SHOWNONLYREDACTED"},
        )
        probe = Probe()
        link = Link(cfg, KEY, probe.on_event, probe.on_state)
        task = asyncio.create_task(link.run())
        await probe.until(lambda: probe.states)
        await stop_link(link, task)
    assert sim.handshakes[0].headers["X-Api-Token"] == HEADER_VALUE  # it was really sent
    text = stderr_log.getvalue()
    assert "> X-Api-Token: ***" in text and "> Authorization: Bearer ***" in text
    assert HEADER_VALUE not in text and "SHOWNONLYREDACTED" not in text and KEY not in text


# ---------------------------------------------------------------- ws:// and machine ids


def _check_config(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"api": {"url": url, "api_key": "sk-x"}}))
    return subprocess.run(
        [sys.executable, "-m", "agentd", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "url",
    ["ws://api.example.com/v1/realtime", "ws://192.168.1.20:8080/v1", "ws://127.0.0.1.nip.io/"],
)
def test_check_config_refuses_ws_beyond_loopback(tmp_path: Path, url: str) -> None:
    r = _check_config(tmp_path, url)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "api.url: ws:// would send the API key and your voice unencrypted; use wss://" in (
        r.stdout + r.stderr
    )


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:8765/v1/realtime", "ws://localhost/v1", "ws://[::1]:9/", "wss://a.b/"]
)
def test_check_config_allows_ws_to_loopback_and_any_wss(tmp_path: Path, url: str) -> None:
    r = _check_config(tmp_path, url)
    assert r.returncode == 0, r.stdout + r.stderr


def test_machine_id_placeholder_is_the_app_specific_id() -> None:
    """machine-id(5): never send the raw id. The value must equal what systemd computes
    for agentd's app id (sd_id128_get_machine_app_specific)."""
    raw = Path("/etc/machine-id").read_text().strip()
    cfg = C.from_mapping({"device": {"user_id": "pi-{machine_id}"}})
    expected = subprocess.run(
        ["systemd-id128", "machine-id", f"--app-specific={placeholders.APP_ID}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert cfg.device.user_id == f"pi-{expected}"
    assert raw not in cfg.device.user_id and raw[:8] not in cfg.device.user_id
    # another app id gives an unrelated id: nothing links the device across apps
    assert placeholders.app_specific_id(raw, "0" * 32) != expected


def test_missing_machine_id_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placeholders, "MACHINE_ID_FILES", ("/nonexistent/machine-id",))
    with pytest.raises(C.ConfigError) as exc:
        C.from_mapping({"device": {"user_id": "{machine_id}"}})
    assert exc.value.problems[0].startswith("device.user_id: {machine_id} needs a machine id")
    assert C.from_mapping({"device": {"user_id": "{hostname}"}})  # not needed, not checked


# ---------------------------------------------------------------- escaping server text

FORGED = "2026-12-03 00:00:00,000 ERROR   agentd: FORGED"


def test_log_lines_cannot_be_forged(stderr_log: io.StringIO) -> None:
    log = logging.getLogger("agentd.test")
    log.warning("server error: %s", f"boom\n{FORGED}\r\x1b[2J\u202e")
    log.info("user said: %s", "你好\nworld")
    lines = stderr_log.getvalue().splitlines()
    assert len(lines) == 2 and not any(line.startswith("2026-12-03 00:00:00") for line in lines)
    assert lines[0].endswith("server error: boom\\n" + FORGED + "\\r\\x1b[2J\\u202e")
    assert lines[1].endswith("user said: 你好\\nworld")


async def test_server_text_is_logged_escaped_by_the_daemon(
    harness: Harness, all_logs: pytest.LogCaptureFixture
) -> None:
    """A server error message and a transcript with newlines: one log line each."""
    from tests.test_fuzz import assert_turn_works

    h = harness
    h.sim.reply = "Fine."
    h.sim.heard = f"what time is it\n{FORGED} transcript"
    await assert_turn_works(h)
    h.sim.faults.error_event = {"type": "server_error", "code": None, "message": f"x\n{FORGED}"}
    link = h.daemon.link
    assert link is not None
    link.send(ce.Clear())
    await h.until(lambda: any("server error" in r.getMessage() for r in all_logs.records))
    text = all_logs.text
    assert "FORGED" in text and not any(line.startswith("2026-12-03") for line in text.splitlines())
    assert f"user said: what time is it\\n{FORGED} transcript" in text
    assert f"x\\n{FORGED}" in text


def test_status_line_cannot_inject_notify_fields(tmp_path: Path) -> None:
    """STATUS= is one field of a newline-separated datagram: a newline in it would let text
    add WATCHDOG=1 or READY=1 of its own."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(path))
        rx.settimeout(2)
        logs.register_secret(KEY)
        n = Notifier({"NOTIFY_SOCKET": str(path)})
        n.status(f"error: boom\nWATCHDOG=1\nkey {KEY}")
        n.close()
        data = rx.recv(4096).decode()
    assert data.count("\n") == 0 and data.startswith("STATUS=error: boom\\nWATCHDOG=1")
    assert KEY not in data


def test_redact_obj_cleans_nested_answers() -> None:
    logs.register_secret(KEY)
    answer: dict[str, Any] = {"ok": False, "problems": [f"a {KEY}", {"k": (KEY, 1)}], KEY: None}
    assert KEY not in json.dumps(logs.redact_obj(answer))
    assert control.parse_request(b'{"cmd": "status"}') == ("status", "")
