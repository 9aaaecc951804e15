"""End-to-end latencies of the real daemon against the simulator, in the PulseAudio room.

- release → commit + response.create on the wire (the simulator timestamps arrivals), p95;
- audio delta received → handed to ALSA (frame off the socket → Playback.play), p95;
- interrupt → speaker silent: press → ALSA drop(), plus the answer audio that still came out
  of the room after the position the drop was taken at (judged by content, see tests/room_oracle.py);
- truncate error: audio_end_ms vs how much of the answer the room really played, by content;
  the click is aimed inside a stretch of speech so the cut is pinned to one 5 ms block;
- server restart → session restored (connection cut without close frame → session.updated);
- start → READY=1 and RSS of `agentd run` in its own process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DIR = Path(tempfile.mkdtemp(prefix="agentd-bench-"))
os.environ["XDG_CONFIG_HOME"] = str(DIR)  # before the first ALSA call

import numpy as np  # noqa: E402

from agentd import conversation as cv  # noqa: E402
from agentd.audio.frame import chop  # noqa: E402
from agentd.audio.pcm import to_float  # noqa: E402
from agentd.config import load  # noqa: E402
from agentd.service import Daemon, Hooks  # noqa: E402
from agentd.sim import Simulator  # noqa: E402
from agentd.sim.room import PulseRoom, asoundrc, write_asoundrc  # noqa: E402
from bench.daemon_rig import agentd_run, daemon_config  # noqa: E402
from tests.room_oracle import (  # noqa: E402
    cut_error_ms,
    loud_runs_ms,
    played_span_ms,
    room_probe,
)

TURNS = 20


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def config(path: Path, sim: Simulator, **extra: Any) -> Path:
    return daemon_config(
        path, sim.url, DIR / "ctl.sock", audio={"output": {"buffer_ms": 60}}, **extra
    )


async def in_process(room: PulseRoom) -> dict[str, float]:
    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    speech = (rng.standard_normal(8000) * 8000).astype("<i2").tobytes()  # 500 ms
    async with Simulator("openai", pace=1.0) as sim:
        cfg = config(DIR / "c.yaml", sim)
        d = Daemon(cfg, load(cfg, require_key=False), Hooks(use_gpio=False))
        handed: list[float] = []
        received: dict[int, float] = {}
        on_server = d._on_server

        def timed_on_server(e: Any) -> None:
            if type(e).__name__ == "AudioChunk":
                received[id(e)] = time.perf_counter()
                before = len(handed)
                on_server(e)
                if len(handed) > before:
                    handed[-1] -= received.pop(id(e))
                return
            on_server(e)

        d._on_server = timed_on_server  # type: ignore[method-assign]
        task = asyncio.create_task(d.run())
        while not d.conv.connected:
            await asyncio.sleep(0.01)
        assert d.playback is not None
        play = d.playback.play

        def timed_play(*a: Any, **k: Any) -> None:
            play(*a, **k)
            handed.append(time.perf_counter())

        d.playback.play = timed_play  # type: ignore[method-assign]
        heard: list[bytes] = []  # the room, recorded from outside: "the speaker"
        probe = room_probe(asyncio.get_running_loop(), lambda f: heard.append(f.audio))
        probe.start()
        await asyncio.sleep(1.0)  # the monitor's first half second may hold junk
        ref = to_float(sim.speech.pcm(sim.reply, 16000))
        targets = [(lo + hi) / 2 for lo, hi in loud_runs_ms(ref, after_ms=300)]  # click here
        commit, create, drop, trunc_err, after_drop = [], [], [], [], []
        mark = len(heard)
        for turn in range(TURNS + 1):  # turn 0 primes the room probe
            d.feed(cv.Press())
            for f in chop(speech, 16000, 20, start=time.monotonic()):
                d._on_mic(f)
            sim.events.clear()
            t_rel = time.monotonic()
            d.feed(cv.Release())
            while not sim.client_events("response.create"):
                await asyncio.sleep(0.0005)
            rec = {r.event["type"]: r.t for r in sim.events}
            commit.append((rec["input_audio_buffer.commit"] - t_rel) * 1000)
            create.append((rec["response.create"] - t_rel) * 1000)
            while d.conv.state is not cv.State.SPEAKING or d.conv.item_id is None:
                await asyncio.sleep(0.001)
            item = d.conv.item_id
            target = targets[turn % len(targets)]
            while d.playback.heard_ms(item) < target:
                await asyncio.sleep(0.001)
            t_press = time.monotonic()
            d.feed(cv.Interrupt())
            while d.playback.flushed_at < t_press:
                await asyncio.sleep(0.0005)
            drop.append((d.playback.flushed_at - t_press) * 1000)
            while not sim.client_events("conversation.item.truncate"):
                await asyncio.sleep(0.001)
            end_ms = sim.client_events("conversation.item.truncate")[-1]["audio_end_ms"]
            await asyncio.sleep(0.4)  # the room's recording catches up
            # the room since the previous answer was cut: this answer's onset and its cut
            room = to_float(b"".join(heard[mark:]))
            mark = len(heard)
            lo, hi = played_span_ms(room, ref)
            if turn == 0:  # the probe delivers its first seconds late: this turn only primes it
                continue
            trunc_err.append(cut_error_ms(lo, hi, end_ms))
            after_drop.append(max(0.0, lo - end_ms))
        probe.stop()
        deltas = [h * 1000 for h in handed if h < 1]
        out["release_commit_p95_ms"] = pct(commit, 95)
        out["release_create_p95_ms"] = pct(create, 95)
        out["delta_to_alsa_p95_ms"] = pct(deltas, 95)
        out["interrupt_drop_max_ms"] = max(drop)
        out["interrupt_silent_max_ms"] = max(
            a + b for a, b in zip(drop[1:], after_drop, strict=True)
        )
        out["truncate_err_max_ms"] = max(trunc_err, key=abs)
        out["truncate_err_median_ms"] = float(np.median(trunc_err))
        out["probe_dropped"] = probe.stats.dropped_frames
        out["underruns"] = d.playback.stats.underruns
        out["starved"] = d.playback.stats.starved
        # server restart → session restored (one restart of a healthy link; repeated drops
        # within a minute back off on purpose, see agentd/realtime/backoff.py)
        updates = len(sim.client_events("session.update"))
        t0 = time.monotonic()
        sim.drop_all()
        while len(sim.client_events("session.update")) <= updates or not d.conv.connected:
            await asyncio.sleep(0.002)
        out["restart_restored_s"] = time.monotonic() - t0
        d.stop_event.set()
        await task
    return out


def start_to_ready(sim_url: str) -> tuple[float, float]:
    """Spawn `agentd run`, time READY=1, read its RSS after a few seconds."""
    cfg = daemon_config(
        DIR / "r.yaml", sim_url, DIR / "ctl.sock", audio={"output": {"buffer_ms": 60}}
    )
    with agentd_run(cfg, DIR / "notify", timeout_s=10) as (pid, ready):
        time.sleep(3)
        rss = 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return ready, rss


async def sim_for_subprocess() -> tuple[Simulator, float, float]:
    sim = await Simulator("openai", pace=1.0).start()
    ready, rss = await asyncio.to_thread(start_to_ready, sim.url)
    return sim, ready, rss


def main() -> dict[str, float]:
    room = PulseRoom(DIR / "pulse")
    write_asoundrc(DIR, asoundrc(room.socket))
    room.start()
    try:
        out = asyncio.run(in_process(room))

        async def sub() -> tuple[float, float]:
            sim, ready, rss = await sim_for_subprocess()
            await sim.stop()
            return ready, rss

        out["start_ready_s"], out["rss_mb"] = asyncio.run(sub())
    finally:
        room.stop()
    print(
        f"release → commit p95 {out['release_commit_p95_ms']:.2f} ms, → response.create p95 "
        f"{out['release_create_p95_ms']:.2f} ms (target ≤ 15 ms)"
    )
    print(
        f"audio delta received → handed to ALSA p95 {out['delta_to_alsa_p95_ms']:.2f} ms (target ≤ 10 ms)"
    )
    print(f"interrupt → ALSA drop max {out['interrupt_drop_max_ms']:.2f} ms (target ≤ 50 ms)")
    print(
        f"interrupt → room silent (drop + answer played past it) max "
        f"{out['interrupt_silent_max_ms']:.1f} ms (target ≤ 50 ms)"
    )
    print(
        f"truncate audio_end_ms vs played, by content: worst {out['truncate_err_max_ms']:+.0f} ms, "
        f"median {out['truncate_err_median_ms']:+.0f} ms (target ±20 ms; "
        f"probe drops {out['probe_dropped']:.0f}; the speaker ran dry mid-answer "
        f"{out['underruns']:.0f}×, the device {out['starved']:.0f}×)"
    )
    print(f"server restart → session restored {out['restart_restored_s']:.2f} s (target ≤ 1.5 s)")
    print(
        f"start → READY=1 {out['start_ready_s']:.2f} s (target ≤ 1.5 s); RSS {out['rss_mb']:.1f} MB (target ≤ 60 MB)"
    )
    return out


if __name__ == "__main__":
    main()
