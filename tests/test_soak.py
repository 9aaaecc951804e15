"""Soak: 1,000 turns at accelerated pace against the simulator (issue 8). Each turn: press,
speech frames straight into the voice gate (faster than real time), release → commit and
response.create, the answer's first audio reaches the speaker, a press interrupts it (flush,
cancel, truncate) and starts the next turn. Memory, tasks, threads and fds must not grow."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agentd import conversation as cv
from agentd.audio.frame import chop
from agentd.config import load
from agentd.service import Daemon, Hooks, trim_memory
from agentd.sim import Simulator
from tests import rigs
from tests.harness import write_config

TURNS = int(os.environ.get("AGENTD_SOAK_TURNS", "1000"))
WARM_UP = 100


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def resources() -> dict[str, int]:
    gc.collect()
    trim_memory()  # what the daemon's ticker does every 30 s while idle
    return {
        "rss_kb": rss_kb(),
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
    }


async def run_turns(daemon: Daemon, sim: Simulator, n: int, speech: bytes) -> float:
    t0 = time.monotonic()
    for _ in range(n):
        daemon.feed(cv.Press())
        assert daemon.playback is not None
        deadline = time.monotonic() + 5
        while daemon.playback.busy():  # the interrupted answer is flushed: the user speaks
            pb = daemon.playback
            assert time.monotonic() < deadline, (
                pb._flush,
                len(pb._pending),
                pb.ends_at - time.monotonic(),
                pb.opened.is_set(),
                pb._thread.is_alive(),
                pb._in_buffer,
                pb.error,
            )
            await asyncio.sleep(0.001)
        mic = daemon.capture
        assert mic is not None
        for f in chop(speech, 16000, 20, start=time.monotonic()):
            mic.on_frame(f)  # through the microphone's own delivery callback
        daemon.feed(cv.Release())
        sim.events.clear()  # the simulator's own record of the turn is not the daemon's memory
        deadline = time.monotonic() + 5
        while daemon.conv.state is not cv.State.SPEAKING:
            assert time.monotonic() < deadline, (
                daemon.status(),
                [e["type"] for e in sim.client_events()][-8:],
            )
            await asyncio.sleep(0.001)
    return time.monotonic() - t0


@pytest.mark.slow
async def test_soak_1000_turns(
    room: rigs.PulseRoom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # run the production codec: the schema oracle keeps every frame it checks
    rng = np.random.default_rng(0)
    speech = (rng.standard_normal(3200) * 8000).astype("<i2").tobytes()  # 200 ms
    async with Simulator("openai", pace=0, reply="Okay.") as sim:
        cfg = write_config(
            tmp_path / "c.yaml",
            sim,
            tmp_path,
            logging__level="warning",
            logging__transcripts=False,
            sounds__enabled=False,
        )
        daemon = Daemon(cfg, load(cfg), Hooks(use_gpio=False))
        task = asyncio.create_task(daemon.run())
        while not daemon.conv.connected:
            await asyncio.sleep(0.01)
        # warm-up: devices opened, caches and the allocator's pools at their working size
        # (10 warm-up turns gave +0.7 MB over the next 1,000 as well)
        warm = await run_turns(daemon, sim, WARM_UP, speech)
        first = resources()
        sim.events.clear()
        before = resources()
        took = await run_turns(daemon, sim, TURNS, speech)
        sim.events.clear()
        after = resources()
        status = daemon.status()
        daemon.stop_event.set()
        await asyncio.wait_for(task, 5)
    growth_kb = after["rss_kb"] - before["rss_kb"]
    print(
        f"soak warm-up: {WARM_UP} turns in {warm:.1f} s, RSS then {first['rss_kb'] / 1024:.1f} MB"
    )
    print(
        f"soak: {TURNS} turns in {took:.1f} s; RSS {before['rss_kb'] / 1024:.1f} → {after['rss_kb'] / 1024:.1f} MB "
        f"({growth_kb:+d} kB); tasks {before['tasks']}→{after['tasks']}, threads "
        f"{before['threads']}→{after['threads']}, fds {before['fds']}→{after['fds']}"
    )
    assert status["turns"] >= TURNS and status["interrupts"] >= TURNS - 1
    assert growth_kb < 2048
    assert after["tasks"] <= before["tasks"]
    assert after["threads"] <= before["threads"]
    assert after["fds"] <= before["fds"]
