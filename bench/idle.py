"""What the real daemon costs while it waits: `agentd run` idle against the simulator, push-to-talk
and hands-free (VAD running), hands-free with echo.mode aec (the canceller on every frame,
the speaker stream kept running on silence), each for IDLE_S seconds, on two rigs:

- card: the `clockmic`/`clockspk` ALSA PCMs (tests/alsa_clock.c), which move frames by the
  clock and wake poll() per period as a sound card does: what a device costs;
- room: the PulseAudio room, whose ALSA pulse plugin adds its own client threads
  (`threaded-ml`) to the daemon's process: shown apart, they are the sound server's cost.

Reports CPU % of one core (utime+stime of the process), wakeups/s per thread (voluntary +
non-voluntary context switches from /proc/PID/task/*/status) and RSS. The target's floor
is one wakeup per capture period (the microphone runs for pre-roll) and it counts everything
beyond that. The capture period is the card's, which is not always the VAD frame's: where
no frame is waited for (push-to-talk without voice barge-in) the card runs 60 ms periods
(RELAXED_CARD_MS, agentd/audio/alsa.py) and the floor is 16.7/s; hands-free runs
period_ms (20 ms: 50/s). A capture thread that only fills the pre-roll naps and reads the
device's buffer in one go, so push-to-talk idle may come in below the floor.

    .venv/bin/python bench/idle.py [seconds]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import rigs

rigs.install_asoundrc()
DIR = rigs.RIG_DIR

import numpy as np  # noqa: E402

from agentd.audio.alsa import RELAXED_CARD_MS, Playback  # noqa: E402
from agentd.sim import Simulator  # noqa: E402
from agentd.voice.gate import VoiceSettings  # noqa: E402
from bench.daemon_rig import agentd_run, daemon_config  # noqa: E402

IDLE_S = 30.0
PERIOD_MS = 20  # audio.input.period_ms: the VAD frame (and the card period where waited for)
TICKS = os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> dict[str, tuple[str, int, float]]:
    """tid → (name, voluntary + non-voluntary context switches, CPU seconds so far)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            n = 0
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    n += int(line.split()[1])
            cpu = _cpu_s(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
        out[task.name] = (name, n, cpu)
    return out


def _cpu_s(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(pid: int, seconds: float) -> dict[str, Any]:
    """Sample the process over ``seconds``: CPU %, wakeups/s per thread, RSS."""
    stat = Path(f"/proc/{pid}/stat")
    c0, th0, t0 = _cpu_s(stat), _threads(pid), time.monotonic()
    time.sleep(seconds)
    c1, th1, t1 = _cpu_s(stat), _threads(pid), time.monotonic()
    dt = t1 - t0
    per: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for tid, (name, n, c) in th1.items():
        if tid in th0:
            key = f"{name}[{tid}]"
            per[key] = (n - th0[tid][1]) / dt
            cpu[key] = (c - th0[tid][2]) / dt * 100
    return {
        "cpu_pct": (c1 - c0) / dt * 100,
        "threads": per,
        "thread_cpu": cpu,
        "rss_mb": _rss_mb(pid),
    }


def run_idle(
    sim_url: str, mode: str, seconds: float, mic: str, spk: str, echo: str = "half_duplex"
) -> dict[str, Any]:
    cfg = daemon_config(
        DIR / f"{mode}-{echo}-{mic}.yaml",
        sim_url,
        DIR / f"{mode}.sock",
        mic,
        spk,
        audio={"input": {"period_ms": PERIOD_MS}, "output": {"channels": 2}},
        turn={"mode": mode},
        echo={"mode": echo},
    )
    with agentd_run(cfg, DIR / f"{mode}-{mic}.notify") as (pid, _):
        # connected, devices open, start-up work done, the idle speaker closed (push-to-talk)
        time.sleep(3.0 + Playback.PARK_S)
        return measure(pid, seconds)


RIGS = {"card": ("clockmic", "clockspk"), "room": ("mic", "spk")}
# hands-free with echo.mode aec: the canceller runs on every frame and the speaker's stream
# never stops (silence written between answers, agentd/audio/alsa.py): its idle cost
MODES = (
    ("push_to_talk", "ptt", "half_duplex"),
    ("hands_free", "hf", "half_duplex"),
    ("hands_free", "hf_aec", "aec"),
)
SERVER_THREADS = ("threaded-ml",)  # the pulse plugin's client threads: the sound server's cost


def main(seconds: float = IDLE_S, only: str | None = None) -> dict[str, float]:
    rng = np.random.default_rng(1)
    rigs.clock_pcms((rng.standard_normal(48000 * 3) * 30).astype("<i2"))  # quiet room noise
    room = rigs.PulseRoom(DIR / "pulse").start()
    out: dict[str, float] = {}

    async def each() -> None:
        async with Simulator("openai", pace=1.0) as sim:
            for rig, (mic, spk) in RIGS.items():
                if only and rig != only:
                    continue
                for mode, key, echo in MODES:
                    card_ms = PERIOD_MS if VoiceSettings(mode).frames_wait else RELAXED_CARD_MS
                    floor = 1000 / card_ms
                    r = await asyncio.to_thread(run_idle, sim.url, mode, seconds, mic, spk, echo)
                    ours = {
                        k: v for k, v in r["threads"].items() if not k.startswith(SERVER_THREADS)
                    }
                    total, server = (
                        sum(ours.values()),
                        sum(r["threads"].values()) - sum(ours.values()),
                    )
                    k = f"{rig}_{key}"
                    out[f"{k}_cpu_pct"] = r["cpu_pct"]
                    out[f"{k}_wakeups_s"] = total
                    out[f"{k}_wakeups_beyond_capture_s"] = total - floor
                    out[f"{k}_server_wakeups_s"] = server
                    # the process's whole count, the sound server's client thread included
                    out[f"{k}_process_wakeups_beyond_capture_s"] = total + server - floor
                    out[f"{k}_rss_mb"] = r["rss_mb"]
                    out[f"{k}_capture_floor_s"] = floor
                    print(
                        f"{rig} rig, {mode}{' + aec' if echo == 'aec' else ''} idle "
                        f"{seconds:.0f} s: CPU {r['cpu_pct']:.2f}% of a "
                        f"core, {total:.0f} wakeups/s in the daemon's threads ({total - floor:+.0f} "
                        f"against the capture card period's {floor:.1f}/s: {card_ms} ms periods)"
                        + (
                            f" + {server:.0f}/s in the pulse plugin's threads (the whole "
                            f"process: {total + server - floor:+.0f})"
                            if server
                            else ""
                        )
                        + f", RSS {r['rss_mb']:.1f} MB"
                    )
                    for name, w in sorted(r["threads"].items(), key=lambda kv: -kv[1]):
                        if w >= 0.05:
                            print(
                                f"    {name:28} {w:7.1f} wakeups/s "
                                f"{r['thread_cpu'][name]:5.2f}% CPU"
                            )

    try:
        asyncio.run(each())
    finally:
        room.stop()
    print(
        "targets: push-to-talk ≤ 1% of a core and ≤ 60 wakeups/s beyond the capture card "
        "period's rate (60 ms periods in push-to-talk, 20 ms hands-free); "
        "hands-free ≤ 3%"
    )
    return out


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else IDLE_S, *sys.argv[2:3])
