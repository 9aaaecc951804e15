"""The event stream (issue 24, point 7): `subscribe` on the real control socket, `agentd ctl
watch`, bounded per-client queues (a slow reader is dropped, the daemon never waits)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentd import control
from agentd import conversation as cv
from agentd.audio.frame import chop
from tests import rigs
from tests.harness import Harness


async def subscribe(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b'{"cmd": "subscribe"}\n')
    await writer.drain()
    hello = json.loads(await reader.readline())
    assert hello["ok"] is True and hello["subscribed"] is True
    return reader, writer


async def events_until(
    reader: asyncio.StreamReader, pred: Any, timeout: float = 20.0
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not any(pred(e) for e in got):
        line = await asyncio.wait_for(reader.readline(), max(0.1, deadline - time.monotonic()))
        assert line, f"stream ended after {len(got)} events; the last: {got[-1:]}"
        got.append(json.loads(line))
    return got


async def a_turn(h: Harness) -> None:
    speech = rigs.espeak("what time is it", 16000, Path("unused"))
    h.daemon.feed(cv.Press())
    await h.until(lambda: h.state() == "listening")
    pb = h.daemon.playback
    assert pb is not None
    await h.until(lambda: not pb.busy())
    for f in chop(speech.astype("<i2").tobytes(), 16000, 20, start=time.monotonic()):
        h.mic(f)
    h.daemon.feed(cv.Release())
    await h.until(lambda: h.state() == "idle")


@pytest.mark.parametrize("fake_harness", [{"audio__output": {"device": "testplay"}}], indirect=True)
async def test_watchers_see_states_turns_transcripts_volume_and_mute(fake_harness: Harness) -> None:
    h = fake_harness
    path = h.daemon.cfg.control.socket
    reader, writer = await subscribe(path)
    await a_turn(h)
    got = await events_until(reader, lambda e: e["event"] == "turn_end")
    kinds = [e["event"] for e in got]
    assert kinds[:2] == ["turn_start", "state"] and got[1]["state"] == "listening"
    states = [e["state"] for e in got if e["event"] == "state"]
    assert states == ["listening", "thinking", "speaking", "idle"]
    said = {e["role"]: e["text"] for e in got if e["event"] == "transcript"}
    assert said == {"user": "what is the time", "assistant": h.sim.reply}
    assert all(isinstance(e["t"], float) for e in got)
    await asyncio.to_thread(control.request, path, "volume", value="30")
    await asyncio.to_thread(control.request, path, "mute")
    got = await events_until(reader, lambda e: e["event"] == "mute")
    assert {"event": "volume", "volume": 30} in [
        {k: v for k, v in e.items() if k != "t"} for e in got
    ]
    assert got[-1]["muted"] is True and got[-1]["switch"] is False
    writer.close()
    await h.until(lambda: h.daemon.hat.events.subscribers == 0)


@pytest.mark.parametrize("fake_harness", [{"logging__transcripts": False}], indirect=True)
async def test_no_transcripts_unless_enabled(fake_harness: Harness) -> None:
    h = fake_harness
    reader, writer = await subscribe(h.daemon.cfg.control.socket)
    await a_turn(h)
    got = await events_until(reader, lambda e: e["event"] == "turn_end")
    assert "transcript" not in [e["event"] for e in got] and "the time" not in json.dumps(got)
    writer.close()


async def test_a_slow_reader_is_dropped_and_the_daemon_goes_on(fake_harness: Harness) -> None:
    """A subscriber that reads nothing: its queue fills, it is told why and cut off; the
    publisher never waited, and a second, reading subscriber got every event."""
    h = fake_harness
    feed = h.daemon.hat.events
    path = h.daemon.cfg.control.socket
    _, stuck = await subscribe(path)  # never reads again
    reader, good = await subscribe(path)
    collector = asyncio.create_task(events_until(reader, lambda e: e.get("n") == 1499))
    worst = 0.0
    for i in range(1500):  # 1.5 MB: far more than the stuck socket's buffers hold
        t0 = time.perf_counter()
        feed.publish("test", n=i, pad="x" * 1000)
        worst = max(worst, time.perf_counter() - t0)
        await asyncio.sleep(0.0005)  # a busy daemon: ~1000 events a second
    got = await collector
    assert [e["n"] for e in got if e["event"] == "test"] == list(range(1500))
    assert feed.dropped == 1 and feed.subscribers == 1
    assert worst < 0.05, worst  # publishing never waits for a reader (slack for load)
    assert (await asyncio.to_thread(control.request, path, "status"))[
        "event_subscribers_dropped"
    ] == 1
    stuck.close()
    good.close()


async def test_ctl_watch_prints_json_lines(fake_harness: Harness) -> None:
    h = fake_harness
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentd", "ctl", "--socket", h.daemon.cfg.control.socket, "watch"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.to_thread(proc.stdout.readline)
        assert json.loads(first)["subscribed"] is True
        await h.until(lambda: h.daemon.hat.events.subscribers == 1)
        await asyncio.to_thread(control.request, h.daemon.cfg.control.socket, "mute")
        line = json.loads(await asyncio.to_thread(proc.stdout.readline))
        assert line["event"] == "state" and line["state"] == "muted"
    finally:
        proc.terminate()
        proc.wait(5)


async def test_a_server_error_is_an_event(fake_harness: Harness) -> None:
    """The simulator's fault switch answers the turn with an error: watchers see it, with the
    error and back-to-idle states around it."""
    h = fake_harness
    reader, writer = await subscribe(h.daemon.cfg.control.socket)
    h.sim.faults.error_event = {"type": "server_error", "code": None, "message": "it broke"}
    await a_turn(h)
    got = await events_until(reader, lambda e: e["event"] == "turn_end")
    assert {"event": "error", "error": "it broke"} in [
        {k: v for k, v in e.items() if k != "t"} for e in got
    ]
    assert "error" in [e.get("state") for e in got]
    writer.close()
