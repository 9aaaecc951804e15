"""Announcements, text turns and context across renewal (issue 21), end to end through the
real control socket and the loopback simulator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from agentd import control
from agentd import conversation as cv
from tests.harness import Harness


def ctl(h: Harness, cmd: str, text: str, interrupt: bool = False) -> dict[str, Any]:
    path = h.daemon.cfg.control.socket
    return control.request(path, cmd, text=text, interrupt=interrupt)


async def spoken(h: Harness, heard: list[tuple[str, str]], text: str) -> None:
    await h.until(lambda: ("assistant", text) in heard)


def listen(h: Harness) -> list[tuple[str, str]]:
    heard: list[tuple[str, str]] = []
    h.daemon.hooks.on_transcript = lambda role, text: heard.append((role, text))
    return heard


async def test_say_on_openai_is_an_out_of_band_response_spoken_verbatim(
    fake_harness: Harness,
) -> None:
    h = fake_harness
    heard = listen(h)
    answer = await asyncio.to_thread(ctl, h, "say", "The battery is low.")
    assert answer["ok"] is True
    await spoken(h, heard, "The battery is low.")
    (create,) = h.sim.client_events("response.create")
    assert create["response"]["conversation"] == "none" and create["response"]["input"] == []
    assert create["response"]["instructions"].endswith("\nThe battery is low.")
    assert h.sim.client_events("conversation.item.create") == []  # nothing entered it


@pytest.mark.parametrize("fake_harness", [{"dialect": "xstar"}], indirect=True)
async def test_say_on_xstar_is_a_tts_text_message(fake_harness: Harness) -> None:
    h = fake_harness
    heard = listen(h)
    await asyncio.to_thread(ctl, h, "say", "Battery low")
    await spoken(h, heard, "Battery low")
    (item,) = h.sim.client_events("conversation.item.create")
    assert item["item"]["content"] == [{"type": "tts_text", "text": "Battery low"}]


async def test_ask_is_a_user_text_turn_and_its_answer_plays(fake_harness: Harness) -> None:
    h = fake_harness
    heard = listen(h)
    h.sim.reply = "Paris."
    await asyncio.to_thread(ctl, h, "ask", "What is the capital of France?")
    await spoken(h, heard, "Paris.")
    (item,) = h.sim.client_events("conversation.item.create")
    assert item["item"]["role"] == "user"
    assert item["item"]["content"] == [
        {"type": "input_text", "text": "What is the capital of France?"}
    ]


async def test_say_waits_for_the_answer_to_end_unless_told_to_interrupt(
    fake_harness: Harness,
) -> None:
    h = fake_harness
    heard = listen(h)
    await asyncio.to_thread(ctl, h, "ask", "tell me a story")
    await h.until(lambda: h.state() == "speaking")
    waited = await asyncio.to_thread(ctl, h, "say", "Later.")
    assert waited["queued"] == 1 and len(h.sim.client_events("response.create")) == 1
    await h.until(lambda: ("assistant", "Later.") in heard, timeout=20)
    assert next(t for r, t in heard if r == "assistant") != "Later."  # the story came first
    await h.until(lambda: h.state() == "idle")
    await asyncio.to_thread(ctl, h, "ask", "another story")
    await h.until(lambda: h.state() == "speaking")
    await asyncio.to_thread(ctl, h, "say", "Now!", True)
    await h.until(lambda: ("assistant", "Now!") in heard)
    assert h.sim.client_events("response.cancel")  # the story was cut off


async def test_ctl_say_from_the_command_line(fake_harness: Harness) -> None:
    h = fake_harness
    heard = listen(h)
    sock = h.daemon.cfg.control.socket
    argv = [sys.executable, "-m", "agentd", "ctl", "--socket", sock, "say", "Hello there"]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    await spoken(h, heard, "Hello there")
    missing = [sys.executable, "-m", "agentd", "ctl", "--socket", sock, "ask"]
    done = await asyncio.to_thread(subprocess.run, missing, capture_output=True, text=True)
    assert done.returncode == 2 and "needs a TEXT" in done.stderr
    assert control.parse_request(b'{"cmd": "say", "text": ""}')[0] is None


# ------------------------------------------------------------------ context across renewal


async def converse_then_renew(h: Harness, how: str = "renew") -> list[dict[str, Any]]:
    heard = listen(h)
    h.sim.reply = "Nice to meet you Ada."
    h.sim.tool_calls.append([("get_time", {})])
    h.sim.tool_reply = "Noon."
    h.daemon.feed(cv.Announce("My name is Ada.", ask=True))
    await h.until(lambda: ("assistant", "Noon.") in heard)
    await h.until(lambda: h.state() == "idle")
    if how == "renew":
        h.daemon.feed(cv.RenewDue("test: the session cap"))
    else:  # the server vanished: a reconnect, not a planned renewal
        h.sim.drop_all()
    await h.until(lambda: h.sim.connections == 2 and h.state() == "idle")
    await asyncio.sleep(0.3)
    return [r.event for r in h.sim.events if r.conn == 2]


@pytest.mark.parametrize("how", ["renew", "reconnect"])
async def test_recent_turns_and_tool_calls_survive_a_renewal(
    fake_harness: Harness, how: str
) -> None:
    events = await converse_then_renew(fake_harness, how)
    items = [e["item"] for e in events if e["type"] == "conversation.item.create"]
    assert events[0]["type"] == "session.update"  # the context follows the new session's set-up
    kinds = [(i["type"], i.get("role")) for i in items]
    assert kinds == [
        ("message", "user"),
        ("function_call", None),
        ("function_call_output", None),
        ("message", "assistant"),
    ]
    assert items[0]["content"][0]["text"] == "My name is Ada."
    assert items[1]["name"] == "get_time" and items[2]["call_id"] == items[1]["call_id"]
    assert items[3]["content"] == [{"type": "output_text", "text": "Noon."}]


@pytest.mark.parametrize("fake_harness", [{"dialect": "xstar"}], indirect=True)
async def test_xstar_keeps_its_own_memory_so_nothing_is_replayed(fake_harness: Harness) -> None:
    events = await converse_then_renew(fake_harness)
    assert [e for e in events if e["type"] == "conversation.item.create"] == []
