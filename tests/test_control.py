"""The control socket under abuse (issue 18, point 7), over real unix sockets: a live
daemon's socket is never taken over, only a stale socket is unlinked, a malformed request
gets one JSON error line (no traceback) and the connection survives or closes cleanly,
and concurrent clients are capped."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentd import control
from agentd.control import MAX_CLIENTS, MAX_LINE, ControlServer, SocketInUse
from tests.harness import Harness


async def _echo(cmd: str) -> dict[str, Any]:
    return {"ok": True, "cmd": cmd}


class Client:
    """A raw client: send bytes, read one answer line (or EOF)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Client:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=2**20)
        return cls(reader, writer)

    async def ask(self, data: bytes) -> dict[str, Any] | None:
        self.writer.write(data)
        await self.writer.drain()
        return await self.answer()

    async def answer(self) -> dict[str, Any] | None:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        if not line:
            return None
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        result: dict[str, Any] = json.loads(line)
        return result

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    srv = ControlServer(str(tmp_path / "ctl.sock"), _echo)
    assert await srv.start()
    yield srv
    await srv.close()


MALFORMED = {
    "no cmd": (b'{"command": "status"}\n', 'no "cmd" string'),
    "cmd not a string": (b'{"cmd": {"x": 1}}\n', 'no "cmd" string'),
    "non-object JSON": (b'["status"]\n', "must be a JSON object"),
    "not JSON": (b"status please\n", "not JSON"),
    "deep nesting": (b"[" * 4000 + b"\n", "nested too deeply"),
    "deep nesting in cmd": (b'{"cmd": ' + b"[" * 3000 + b"\n", "nested too deeply"),
    "invalid UTF-8": (b'{"cmd": "st\xffatus"}\n', "not UTF-8"),
    "unknown command": (b'{"cmd": "format-disk"}\n', "unknown command 'format-disk'"),
}


@pytest.mark.parametrize("request_line", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_gets_one_error_line_and_the_connection_survives(
    server: ControlServer, caplog: pytest.LogCaptureFixture, request_line: tuple[bytes, str]
) -> None:
    caplog.set_level(logging.DEBUG)
    data, words = request_line
    c = await Client.open(server.path)
    answer = await c.ask(data)
    assert answer is not None and answer["ok"] is False and words in answer["error"], answer
    assert await c.ask(b'{"cmd": "status"}\n') == {"ok": True, "cmd": "status"}
    c.close()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_line_beyond_the_limit_is_answered_then_closed(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    c = await Client.open(server.path)
    answer = await c.ask(b'{"cmd": "' + b"x" * (MAX_LINE * 4) + b'"}\n')
    assert answer == {"ok": False, "error": f"request longer than {MAX_LINE} bytes"}
    assert await c.closed()
    c.close()
    # the server is fine for the next client
    c2 = await Client.open(server.path)
    assert await c2.ask(b'{"cmd": "status"}\n') == {"ok": True, "cmd": "status"}
    c2.close()
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_failing_command_answers_with_the_error_redacted(tmp_path: Path) -> None:
    from agentd import logs

    logs.register_secret("sk-failing-secret-123")

    async def boom(cmd: str) -> dict[str, Any]:
        raise RuntimeError("cannot reach with sk-failing-secret-123")

    srv = ControlServer(str(tmp_path / "ctl.sock"), boom)
    assert await srv.start()
    c = await Client.open(srv.path)
    assert await c.ask(b'{"cmd": "press"}\n') == {
        "ok": False,
        "error": "press failed: cannot reach with ***",
    }
    c.close()
    await srv.close()


async def test_concurrent_clients_are_capped(server: ControlServer) -> None:
    clients = [await Client.open(server.path) for _ in range(MAX_CLIENTS)]
    for c in clients:  # every slot really taken (each served once)
        assert await c.ask(b'{"cmd": "status"}\n') == {"ok": True, "cmd": "status"}
    extra = await Client.open(server.path)
    assert await extra.answer() == {
        "ok": False,
        "error": f"too many control clients ({MAX_CLIENTS}); retry",
    }
    assert await extra.closed()
    extra.close()
    clients[0].close()
    await asyncio.sleep(0.1)
    late = await Client.open(server.path)  # a slot freed: served again
    assert await late.ask(b'{"cmd": "status"}\n') == {"ok": True, "cmd": "status"}
    late.close()
    for c in clients[1:]:
        c.close()


async def test_idle_clients_are_closed(
    server: ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "IDLE_S", 0.2)
    c = await Client.open(server.path)
    assert await c.closed()
    c.close()


# ---------------------------------------------------------------- the socket path


async def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's socket
    srv = ControlServer(str(path), _echo)
    assert await srv.start()
    c = await Client.open(path)
    assert await c.ask(b'{"cmd": "status"}\n') == {"ok": True, "cmd": "status"}
    c.close()
    await srv.close()
    assert not path.exists()


async def test_a_regular_file_is_never_unlinked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ctl.sock"
    path.write_text("precious")
    srv = ControlServer(str(path), _echo)
    assert not await srv.start()
    await srv.close()
    assert path.read_text() == "precious"
    assert "exists and is not a socket" in caplog.text


async def test_a_live_socket_is_never_taken_over(server: ControlServer) -> None:
    second = ControlServer(str(server.path), _echo)
    with pytest.raises(SocketInUse, match="another agentd is running"):
        await second.start()
    await second.close()  # must not unlink the first one's socket
    c = await Client.open(server.path)
    assert await c.ask(b'{"cmd": "status"}\n') == {"ok": True, "cmd": "status"}
    c.close()


async def test_a_second_agentd_run_exits_and_the_first_keeps_working(harness: Harness) -> None:
    """`agentd run` with the same config while a daemon runs: the second exits non-zero with
    one clear line; the first still answers `ctl status` and a spoken turn."""
    from tests.test_fuzz import assert_turn_works

    h = harness
    h.sim.reply = "Fine."
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentd",
        "run",
        "--config",
        str(h.daemon.config_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode not in (0, None)
    errors = [line for line in err.decode().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "another agentd is running" in errors[0], err.decode()
    answer = await asyncio.to_thread(control.request, h.daemon.cfg.control.socket, "status")
    assert answer["ok"] and answer["connected"]
    await assert_turn_works(h)


async def test_a_socket_it_may_not_probe_is_not_taken_over(tmp_path: Path) -> None:
    """The service's socket is agentd:agentd 0660: a user outside the group running
    `agentd run` must not conclude "stale" and start a second daemon beside it. The other
    user is root without CAP_DAC_OVERRIDE (setpriv), facing a socket of mode 0."""
    path = tmp_path / "ctl.sock"
    owner = ControlServer(str(path), _echo)
    assert await owner.start()
    os.chmod(path, 0)
    code = (
        "import asyncio, sys\n"
        "from agentd.control import ControlServer, SocketInUse\n"
        "async def h(c): return {}\n"
        "try:\n"
        f"    asyncio.run(ControlServer({str(path)!r}, h).start())\n"
        "except SocketInUse as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        sys.executable,
        "-c",
        code,
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).parent.parent),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3, out
    assert b"cannot tell whether another agentd owns" in out and b"Permission denied" in out
    os.chmod(path, 0o660)
    c = await Client.open(path)  # the owner's socket is still there and answering
    assert await c.ask(b'{"cmd": "status"}\n') == {"ok": True, "cmd": "status"}
    c.close()
    await owner.close()
