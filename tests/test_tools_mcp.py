"""mcp_local end to end (issue 21): agentd as the MCP client of a real MCP server process
written with the same SDK (tests/mcp_server.py), over stdio and over streamable HTTP, with
the real daemon talking to the loopback simulator — xStar included, since the server's tools
are offered as ordinary functions."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Harness
from tests.test_tools_e2e import FAKE_AUDIO, call, output_of

SERVER = str(Path(__file__).with_name("mcp_server.py"))
pytest.importorskip("mcp")


def offered(h: Harness) -> list[str]:
    """The function names of the latest session.update."""
    updates = h.sim.client_events("session.update")
    return [t["name"] for t in updates[-1]["session"].get("tools", [])] if updates else []


STDIO = {
    "name": "notes",
    "kind": "mcp_local",
    "command": [sys.executable, SERVER, "stdio"],
    "env": {"TEST_WHO": "the pi"},
    "allowed_tools": ["add", "whoami", "learn", "fresh", "die"],
}


@pytest.mark.parametrize(
    "fake_harness",
    [{"agent__tools": [STDIO]}, {"agent__tools": [STDIO], "dialect": "xstar"}],
    indirect=True,
)
async def test_stdio_server_tools_are_listed_filtered_called_relisted_and_restarted(
    fake_harness: Harness,
) -> None:
    h = fake_harness
    await h.until(lambda: "add" in offered(h), timeout=20)
    assert "secret_admin" not in offered(h)  # listed by the server, not in allowed_tools
    await call(h, "add", {"a": 2, "b": 3})
    await call(h, "whoami", {})
    await call(h, "add", {"a": "two"})  # refused by the server's own input schema
    out = await output_of(h, 3)
    assert out[0]["output"] == "5" and out[1]["output"] == "the pi"
    assert "error" in json.loads(out[2]["output"])
    # notifications/tools/list_changed: the new tool reaches the session
    await call(h, "learn", {})
    await h.until(lambda: "fresh" in offered(h), timeout=10)
    # the server dies: its tools leave the session, and come back when it is restarted
    updates = len(h.sim.client_events("session.update"))
    await call(h, "die", {})
    await h.until(lambda: len(h.sim.client_events("session.update")) > updates, timeout=10)
    withdrawn = h.sim.client_events("session.update")[updates]["session"].get("tools", [])
    assert "add" not in [t["name"] for t in withdrawn]
    await h.until(lambda: "add" in offered(h), timeout=20)
    server = h.daemon.toolbox.servers["notes"]
    assert server.restarts >= 1
    await call(h, "add", {"a": 40, "b": 2})
    assert (await output_of(h, 6))[-1]["output"] == "42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def http_server() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, SERVER, "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        time.sleep(0.1)
    yield port
    proc.kill()
    proc.wait()


async def test_streamable_http_server_on_xstar(
    http_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import running_daemon

    tool: dict[str, Any] = {
        "name": "remote_notes",
        "kind": "mcp_local",
        "url": f"http://127.0.0.1:{http_server}/mcp",
        "allowed_tools": ["add"],
    }
    over: dict[str, Any] = {"agent__tools": [tool], "dialect": "xstar", "hooks": FAKE_AUDIO}
    async with running_daemon(tmp_path, monkeypatch, over) as h:
        await h.until(lambda: "add" in offered(h), timeout=20)
        assert "whoami" not in offered(h)
        await call(h, "add", {"a": 20, "b": 22})
        (out,) = await output_of(h)
        assert out["output"] == "42"
