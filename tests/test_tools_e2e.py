"""Tools end to end (issue 21): the real daemon (in-memory microphone and speaker) against the
bundled simulator over a real loopback WebSocket; every client event is checked by the SDK
oracle. Each tool kind runs for real: builtin, command (real programs), http (a real local
HTTP server), mcp (session config), mcp_local (tests/test_tools_mcp.py)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentd import control
from agentd import conversation as cv
from tests.fakes import FakeCapture, FakePlayback
from tests.harness import Harness

FAKE_AUDIO = {
    "make_capture": FakeCapture,
    "make_playback": functools.partial(FakePlayback, clock=time.monotonic),
}


def outputs(h: Harness) -> list[dict[str, Any]]:
    return [
        e["item"]
        for e in h.sim.client_events("conversation.item.create")
        if e["item"]["type"] == "function_call_output"
    ]


def after(h: Harness, kind: str, index: int) -> list[dict[str, Any]]:
    return [r.event for r in h.sim.events[index:] if r.event.get("type") == kind]


async def call(h: Harness, name: str, arguments: dict[str, Any]) -> int:
    """The model (simulator) calls ``name`` in its answer to a text turn; returns the index of
    the first client event after the ask."""
    h.sim.tool_calls.append([(name, arguments)])
    h.sim.tool_reply = "Done."  # a short answer: the next call need not wait long
    start = len(h.sim.events)
    h.daemon.feed(cv.Announce("please do it", ask=True))
    return start


async def output_of(h: Harness, n: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
    await h.until(lambda: len(outputs(h)) >= n, timeout)
    return outputs(h)


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


# ------------------------------------------------------------------ builtin


@pytest.mark.parametrize(
    "fake_harness", [{"dialect": "openai"}, {"dialect": "xstar"}], indirect=True
)
async def test_what_time_is_it_calls_get_time_and_the_answer_is_spoken(
    fake_harness: Harness,
) -> None:
    """The demo's path: the user asks the time, the model calls the builtin, agentd sends the
    output and ONE response.create, and the answer (built from the output) is spoken."""
    h = fake_harness
    heard: list[tuple[str, str]] = []
    h.daemon.hooks.on_transcript = lambda role, text: heard.append((role, text))
    h.sim.tool_rules = {"what time is it": ("get_time", {})}
    h.sim.tool_reply = "The tool says {output}"
    h.sim.pace = 0  # the answer's transcript at once (the speaker still plays in real time)
    start = len(h.sim.events)
    h.daemon.feed(cv.Announce("what time is it", ask=True))
    (out,) = await output_of(h)
    now = json.loads(out["output"])
    assert now["time"] == time.strftime("%H:%M") or now["time"] <= time.strftime("%H:%M")
    await h.until(lambda: any(role == "assistant" and "tool says" in t for role, t in heard))
    creates = after(h, "response.create", start)
    assert len(creates) == 2  # the ask's, and exactly one after the output
    kinds = [r.event["type"] for r in h.sim.events[start:]]
    assert kinds.index("response.create", kinds.index("conversation.item.create") + 2) > max(
        i
        for i, r in enumerate(h.sim.events[start:])
        if r.event.get("item", {}).get("type") == "function_call_output"
    )
    assert "thinking" in [s for _, s in h.states]
    assert h.daemon.status()["tool_calls"] == 1


async def test_bad_arguments_become_an_output_the_model_can_speak_about(
    fake_harness: Harness,
) -> None:
    h = fake_harness
    h.daemon.toolbox.registry.tools.pop("set_volume", None)
    await call(h, "get_time", {"unexpected": {"deep": 1}})  # schema allows extra keys: runs
    await call(h, "nope", {})
    outs = await output_of(h, 2)
    assert "time" in json.loads(outs[0]["output"])
    assert json.loads(outs[1]["output"]) == {"error": "no tool named 'nope' is available now"}


@pytest.mark.parametrize(
    "fake_harness",
    [{"agent__tools": [{"name": "set_volume", "kind": "builtin"}]}],
    indirect=True,
)
async def test_set_volume_goes_through_the_daemon_s_volume_setter(fake_harness: Harness) -> None:
    h = fake_harness
    await call(h, "set_volume", {"percent": 500})  # out of the schema's range: refused
    (out,) = await output_of(h)
    assert "500 is greater than the maximum of 100" in json.loads(out["output"])["error"]
    assert h.daemon.output_volume() == 1.0
    await h.until(lambda: h.state() == "idle")
    await call(h, "set_volume", {"percent": 40})
    await output_of(h, 2)
    assert h.daemon.output_volume() == pytest.approx(0.4)
    assert h.daemon.device_status()["volume_percent"] == 40


# ------------------------------------------------------------------ command


def command_tool(name: str, argv: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "command",
        "description": "test",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        "command": argv,
        **extra,
    }


@pytest.mark.parametrize(
    "fake_harness",
    [
        {
            "agent__tools": [
                command_tool("echo_text", ["/bin/echo", "{text}"]),
                command_tool("show_env", ["/usr/bin/env"], env={"GREETING": "hi"}, cwd="/tmp"),
                command_tool("fail", ["/bin/sh", "-c", "echo broken >&2; exit 3"]),
                command_tool("big", ["/usr/bin/yes", "{text}"], output_max_bytes=100),
            ]
        }
    ],
    indirect=True,
)
async def test_command_tools_run_real_programs_without_a_shell(fake_harness: Harness) -> None:
    h = fake_harness
    nasty = "a; rm -rf / $(id) `reboot` 'x'"
    os.environ["AGENTD_TEST_SECRET"] = "sk-daemon-only-secret"  # the daemon's own environment
    try:
        for name, args in [
            ("echo_text", {"text": nasty}),
            ("show_env", {}),
            ("fail", {}),
            ("big", {"text": "y"}),
        ]:
            await call(h, name, args)
            await h.until(lambda: h.state() == "idle" and not h.daemon._tool_tasks)
    finally:
        del os.environ["AGENTD_TEST_SECRET"]
    echo, env, fail, big = (o["output"] for o in await output_of(h, 4))
    assert echo == nasty + "\n"  # one argv element, never parsed by a shell
    names = {line.split("=", 1)[0] for line in env.splitlines()}
    assert names == {"PATH", "LANG", "GREETING"}  # nothing of the daemon's environment
    assert json.loads(fail) == {"error": "exit status 3: broken"}
    assert big.startswith("y\ny\n") and big.endswith("[output cut]") and len(big) < 120


@pytest.mark.parametrize(
    "fake_harness",
    [{"agent__tools": [command_tool("slow", ["/bin/sleep", "30"], timeout_s=0.5)]}],
    indirect=True,
)
async def test_a_command_that_hangs_is_killed_at_its_timeout_and_the_model_told(
    fake_harness: Harness,
) -> None:
    h = fake_harness
    t0 = time.monotonic()
    await call(h, "slow", {})
    (out,) = await output_of(h)
    assert json.loads(out["output"]) == {"error": "the command timed out after 0.5 s"}
    assert time.monotonic() - t0 < 5


SLEEPER = ["/bin/sh", "-c", "echo $$ > PIDS; /bin/sleep 30 & echo $! >> PIDS; wait"]


@pytest.mark.parametrize(
    "fake_harness",
    [
        {
            "agent__tools": [
                command_tool(
                    "sleeper",
                    [a.replace("PIDS", "/tmp/agentd-test-pids") for a in SLEEPER],
                    timeout_s=60,
                )
            ]
        }
    ],
    indirect=True,
)
async def test_an_interrupt_during_a_tool_kills_its_process_group_and_sends_nothing(
    fake_harness: Harness,
) -> None:
    """Button or `ctl interrupt` while a tool runs: the program and what it started die at
    once, no stale output reaches the server, the device is idle."""
    h = fake_harness
    pids = Path("/tmp/agentd-test-pids")
    pids.unlink(missing_ok=True)
    start = await call(h, "sleeper", {})
    await h.until(lambda: pids.exists() and len(pids.read_text().split()) == 2)
    assert h.state() == "thinking"  # the LED shows thinking while the tool runs
    shell, child = (int(p) for p in pids.read_text().split())
    assert alive(shell) and alive(child)
    t0 = time.monotonic()
    h.daemon.feed(cv.Interrupt())
    await h.until(lambda: not alive(shell) and not alive(child), timeout=3)
    assert time.monotonic() - t0 < 1.0
    await asyncio.sleep(0.5)
    assert outputs(h) == []  # nothing stale was sent
    assert len(after(h, "response.create", start)) == 1  # only the ask's
    assert h.state() == "idle"
    assert h.daemon.status()["tools_cancelled"] == 1
    pids.unlink()


# ------------------------------------------------------------------ http


class HomeAssistant:
    """A real local HTTP server shaped like Home Assistant's REST API."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.delay = delay
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append(("POST", self.path, dict(self.headers), body))
                time.sleep(outer.delay)
                data = json.dumps([{"entity_id": "light.kitchen", "state": "on"}]).encode()
                if self.headers.get("Authorization") != "Bearer ha-secret-token-123":
                    self.send_response(401)
                    data = b'{"message": "unauthorized"}'
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ha_token(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cred") / "ha_auth"
    path.write_text("Bearer ha-secret-token-123\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def ha() -> Any:
    server = HomeAssistant()
    yield server
    server.close()


def http_tools(port: int, token: Path) -> list[dict[str, Any]]:
    light = {
        "description": "Turn on a light",
        "parameters": {
            "type": "object",
            "properties": {"entity": {"type": "string", "enum": ["light.kitchen", "light.hall"]}},
            "required": ["entity"],
        },
        "kind": "http",
        "method": "POST",
        "body": {"entity_id": "{entity}"},
        "headers": {"Authorization": {"file": str(token)}},
        "timeout_s": 2,
    }
    return [
        {
            **light,
            "name": "lights_on",
            "url": f"http://127.0.0.1:{port}/api/services/light/turn_on",
        },
        {
            **light,
            "name": "wrong_key",
            "url": f"http://127.0.0.1:{port}/x",
            "headers": {"Authorization": "Bearer nope"},
        },
        {**light, "name": "nobody_home", "url": "http://127.0.0.1:9/api"},
    ]


async def test_http_tool_calls_home_assistant_with_the_token_from_a_file(
    ha: HomeAssistant,
    ha_token: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    from tests.conftest import running_daemon

    over: dict[str, Any] = {
        "agent__tools": http_tools(ha.port, ha_token),
        "hooks": FAKE_AUDIO,
    }
    async with running_daemon(tmp_path, monkeypatch, over) as h:
        ha.requests.clear()
        await call(h, "lights_on", {"entity": "light.kitchen"})
        await call(h, "lights_on", {"entity": "light.garage"})  # not in the enum: never sent
        await call(h, "wrong_key", {"entity": "light.kitchen"})
        await call(h, "nobody_home", {"entity": "light.kitchen"})
        ok, refused, unauthorized, down = (o["output"] for o in await output_of(h, 4))
        status = json.dumps(
            await asyncio.to_thread(control.request, h.daemon.cfg.control.socket, "status")
        )
    assert json.loads(ok) == [{"entity_id": "light.kitchen", "state": "on"}]
    method, path, headers, body = ha.requests[0]
    assert (method, path, json.loads(body)) == (
        "POST",
        "/api/services/light/turn_on",
        {"entity_id": "light.kitchen"},
    )
    assert headers["Authorization"] == "Bearer ha-secret-token-123"
    assert headers["Content-Type"] == "application/json"
    assert len(ha.requests) == 2  # the bad entity was refused before any request
    assert "light.garage" in json.loads(refused)["error"]
    assert json.loads(unauthorized)["error"].startswith("HTTP 401")
    assert json.loads(down)["error"].startswith("request failed: ConnectionRefusedError")
    assert "ha-secret-token-123" not in all_logs.text and "ha-secret-token-123" not in status
    assert "tool lights_on (http) ran" in all_logs.text


async def test_an_interrupt_during_an_http_tool_drops_the_request(
    ha_token: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import running_daemon

    slow = HomeAssistant(delay=3.0)
    over: dict[str, Any] = {
        "agent__tools": http_tools(slow.port, ha_token),
        "hooks": FAKE_AUDIO,
    }
    try:
        async with running_daemon(tmp_path, monkeypatch, over) as h:
            await call(h, "lights_on", {"entity": "light.kitchen"})
            await h.until(lambda: bool(slow.requests))
            h.daemon.feed(cv.Interrupt())
            await h.until(lambda: not h.daemon._tool_tasks, timeout=1)
            await asyncio.sleep(3.5)  # the server answers late: nothing of it is sent
            assert outputs(h) == [] and h.state() == "idle"
    finally:
        slow.close()


# ------------------------------------------------------------------ mcp (remote, GA)


@pytest.mark.parametrize(
    "fake_harness",
    [
        {
            "agent__tools": [
                {
                    "name": "deepwiki",
                    "kind": "mcp",
                    "server_label": "deepwiki",
                    "server_url": "https://mcp.example.org/mcp",
                    "headers": {"Authorization": {"env": "AGENTD_TEST_MCP_TOKEN"}},
                    "allowed_tools": ["ask_question"],
                    "require_approval": "always",
                    "approve": True,
                }
            ]
        }
    ],
    indirect=True,
)
async def test_remote_mcp_is_session_config_and_approvals_follow_the_policy(
    mcp_token: None, fake_harness: Harness, all_logs: pytest.LogCaptureFixture
) -> None:
    """The server (not the device) calls a remote MCP server: it goes into session.tools
    (checked against the SDK's GA types by the oracle); its approval requests get the
    configured answer, then one response.create."""
    h = fake_harness
    (update,) = h.sim.client_events("session.update")[-1:]
    mcp = [t for t in update["session"]["tools"] if t["type"] == "mcp"]
    assert mcp == [
        {
            "type": "mcp",
            "server_label": "deepwiki",
            "server_url": "https://mcp.example.org/mcp",
            "require_approval": "always",
            "headers": {"Authorization": "Bearer mcp-secret-777"},
            "allowed_tools": ["ask_question"],
        }
    ]
    start = len(h.sim.events)
    request = {
        "id": "mcpr_1",
        "type": "mcp_approval_request",
        "server_label": "deepwiki",
        "name": "ask_question",
        "arguments": "{}",
    }
    response = {
        "id": "resp_x",
        "object": "realtime.response",
        "status": "in_progress",
        "output": [],
    }
    await h.sim.inject(
        json.dumps({"type": "response.created", "event_id": "e1", "response": response}),
        json.dumps(
            {
                "type": "response.output_item.done",
                "event_id": "e2",
                "response_id": "resp_x",
                "output_index": 0,
                "item": request,
            }
        ),
        json.dumps(
            {
                "type": "response.done",
                "event_id": "e3",
                "response": dict(response, status="completed"),
            }
        ),
    )
    await h.until(lambda: bool(after(h, "response.create", start)))
    (answer,) = [e for e in after(h, "conversation.item.create", start)]
    assert answer["item"]["approval_request_id"] == "mcpr_1" and answer["item"]["approve"] is True
    assert "mcp-secret-777" not in all_logs.text


@pytest.fixture
def mcp_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTD_TEST_MCP_TOKEN", "Bearer mcp-secret-777")


async def test_a_reload_changes_the_tools_offered(fake_harness: Harness) -> None:
    """agent.tools is no restart-only key: a reload offers the new set at the next rest."""
    import yaml

    h = fake_harness
    path = h.daemon.config_path
    data = yaml.safe_load(path.read_text())
    data.setdefault("agent", {})["tools"] = [
        command_tool("echo_text", ["/bin/echo", "{text}"]),
        {"name": "get_status", "kind": "builtin", "enabled": False},
    ]
    path.write_text(yaml.safe_dump(data))
    ok, problems = await h.daemon.reload()
    assert ok, problems
    await h.until(
        lambda: (
            [t["name"] for t in h.sim.client_events("session.update")[-1]["session"]["tools"]]
            == ["get_time", "echo_text"]
        )
    )
    await call(h, "echo_text", {"text": "reloaded"})
    assert (await output_of(h))[0]["output"] == "reloaded\n"


@pytest.mark.parametrize(
    "fake_harness",
    [
        {
            "dialect": "openai-beta",
            "agent__tools": [command_tool("echo_text", ["/bin/echo", "{text}"])],
        },
    ],
    indirect=True,
)
async def test_several_calls_in_one_response_get_one_response_create(
    fake_harness: Harness,
) -> None:
    """Two calls in one response (arguments streamed in deltas): both run at once, both
    outputs go back, then exactly one response.create."""
    h = fake_harness
    h.sim.tool_calls.append([("get_time", {}), ("echo_text", {"text": "two"})])
    h.sim.tool_reply = "Done."
    start = len(h.sim.events)
    h.daemon.feed(cv.Announce("do both", ask=True))
    outs = await output_of(h, 2)
    assert json.loads(outs[0]["output"])["time"] and outs[1]["output"] == "two\n"
    await h.until(lambda: len(after(h, "response.create", start)) == 2)
    await asyncio.sleep(0.3)
    kinds = [r.event["type"] for r in h.sim.events[start:]]
    last_output = max(
        i
        for i, r in enumerate(h.sim.events[start:])
        if r.event.get("item", {}).get("type") == "function_call_output"
    )
    assert kinds.count("response.create") == 2
    assert kinds.index("response.create", 2) > last_output


@pytest.mark.parametrize(
    "fake_harness",
    [
        {
            "agent__tools": [
                {"name": "mute", "kind": "builtin"},
                {"name": "end_conversation", "kind": "builtin"},
            ]
        }
    ],
    indirect=True,
)
async def test_mute_and_end_conversation_builtins_act_on_the_device(fake_harness: Harness) -> None:
    h = fake_harness
    start = await call(h, "end_conversation", {})
    await output_of(h)
    await h.until(lambda: h.state() == "idle")
    await asyncio.sleep(0.3)
    assert len(after(h, "response.create", start)) == 1  # no answer after "ended"
    await call(h, "mute", {})
    await output_of(h, 2)
    await h.until(lambda: h.state() == "muted")
    assert h.daemon.status()["muted"] is True
