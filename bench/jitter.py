"""Adaptive playout on a clean and on a jittered link, measured in the PulseAudio room by content.

The daemon (in process) talks to the simulator (pace 1.0: 100 ms deltas at real time) through
a TCP relay on loopback that delays each piece of the byte stream, in order, by
``delay ± jitter`` (uniform), in both directions: what `tc netem delay 50ms 30ms` does to a TCP
stream once TCP has put the reordered segments back in order. (netem itself is not in this
machine's kernel: `tc qdisc add dev lo root netem` says "qdisc kind is unknown".)

Per answer (push-to-talk turns):
- device-added playout latency: first answer audio received (handed to Playback.play) → its
  first sample in the room recording, found by aligning the answer's own speech; the room is
  recorded through a capture probe whose own capture delay (≤ one 10 ms period plus the
  sound server's) is included, so the figure is an upper bound;
- underruns: the daemon's own count (ALSA said the speaker ran dry; the pulse plugin says so
  early, while the sound server still holds audio) and the gaps heard in the room by content
  (an answer that took longer to come out than it lasts); and the playout delay chosen.

    .venv/bin/python bench/jitter.py [answers]
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DIR = Path(tempfile.mkdtemp(prefix="agentd-jitter-"))
os.environ["XDG_CONFIG_HOME"] = str(DIR)  # before the first ALSA call

import numpy as np  # noqa: E402

from agentd import conversation as cv  # noqa: E402
from agentd.audio.frame import AudioFrame, chop  # noqa: E402
from agentd.audio.pcm import to_float  # noqa: E402
from agentd.service import Hooks  # noqa: E402
from agentd.sim import Simulator  # noqa: E402
from bench.daemon_rig import (  # noqa: E402
    InRoom,
    daemon_config,
    first_arrivals,
    onset_in_room,
    pulse_room,
)
from tests.room_oracle import align  # noqa: E402

ANSWERS = 10
PROFILES = {"clean": (0.0, 0.0), "50±30 ms": (0.050, 0.030)}
REPLY = "Hello from the simulator. This is a short spoken answer."
GAP_MS = 10  # an answer that came out this much longer than it is had an audible underrun


class JitterRelay:
    """A loopback TCP relay adding ``delay ± jitter`` to every piece of the stream, in order."""

    def __init__(self, upstream_port: int, delay_s: float, jitter_s: float, seed: int = 0):
        self.upstream_port, self.delay_s, self.jitter_s = upstream_port, delay_s, jitter_s
        self.rng = random.Random(seed)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> JitterRelay:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(self._pipe(cr, sw), self._pipe(sr, cw), return_exceptions=True)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        q: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, data = await q.get()
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                if not data:
                    w.close()
                    return
                w.write(data)
                await w.drain()

        task = asyncio.create_task(deliver())
        last = 0.0
        try:
            while True:
                data = await r.read(65536)
                d = self.delay_s + self.rng.uniform(-self.jitter_s, self.jitter_s)
                last = max(last, time.monotonic() + d)  # a byte stream stays in order
                q.put_nowait((last, data))
                if not data:
                    break
            await task
        finally:
            task.cancel()


def gap_ms(frames: list[AudioFrame], ref: np.ndarray) -> float | None:
    """Silence the room inserted into the answer (underruns heard, by content): how much
    longer the answer took to come out than it lasts, from its first to its last half second
    aligned in the recording."""
    if not frames:
        return None
    rec = to_float(b"".join(f.audio for f in frames))
    start, g0 = align(rec, ref)
    tail = ref[-8000:]
    end, g1 = align(rec[start:], tail)
    if min(g0, g1) < 0.1:
        return None
    return max(0.0, (end + tail.size - ref.size) * 1000 / 16000)


async def one_profile(name: str, delay_s: float, jitter_s: float, answers: int) -> dict[str, Any]:
    async with Simulator("openai", pace=1.0) as sim:
        sim.reply = REPLY
        port = int(sim.url.split(":")[2].split("/")[0])
        relay = await JitterRelay(port, delay_s, jitter_s).start()
        cfg_path = daemon_config(
            DIR / f"{name.split()[0]}.yaml",
            sim.url.replace(f":{port}", f":{relay.port}"),
            DIR / "ctl.sock",
        )
        timed, firsts = first_arrivals()
        async with InRoom(cfg_path, Hooks(use_gpio=False, make_playback=timed)) as rig:
            d, heard = rig.daemon, rig.heard
            ref = to_float(sim.speech.pcm(sim.reply, 16000))
            rng = np.random.default_rng(0)
            speech = (rng.standard_normal(8000) * 8000).astype("<i2").tobytes()
            assert d.playback is not None
            lat, under, chosen, gaps, peaks = [], [], [], [], []
            for n in range(
                answers + 1
            ):  # answer 0 wakes the sound server's sink (~2 s): not counted
                heard.clear()
                u0 = d.playback.stats.underruns
                d.feed(cv.Press())
                for f in chop(speech, 16000, 20, start=time.monotonic()):
                    d._on_mic(f)
                d.feed(cv.Release())
                t0 = time.monotonic()
                while d.conv.state is not cv.State.SPEAKING:
                    await asyncio.sleep(0.005)
                    assert time.monotonic() - t0 < 10, "no answer"
                item = d.conv.item_id
                while d.conv.state is cv.State.SPEAKING or d.playback.busy():
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)  # the room's recording catches up
                if n == 0:
                    continue
                onset = onset_in_room(list(heard), ref)
                gap = gap_ms(list(heard), ref)
                if gap is not None:
                    gaps.append(gap)
                if item in firsts and onset is not None:
                    lat.append((onset - firsts[item]) * 1000)
                under.append(d.playback.stats.underruns - u0)
                chosen.append(d.playback.playout.stats.chosen_ms)
                peaks.append(d.playback.playout.stats.peak_ms)
        await relay.stop()
    return {
        "latency_ms": lat,
        "underruns": under,
        "chosen_ms": chosen,
        "gaps_ms": gaps,
        "peaks_ms": peaks,
    }


def main(answers: int = ANSWERS) -> dict[str, float]:
    out: dict[str, float] = {}
    with pulse_room(DIR):
        for name, (delay, jitter) in PROFILES.items():
            r = asyncio.run(one_profile(name, delay, jitter, answers))
            key = "clean" if name == "clean" else "jitter"
            lat = r["latency_ms"]
            out[f"{key}_latency_p50_ms"] = float(np.median(lat)) if lat else float("nan")
            out[f"{key}_latency_p95_ms"] = float(np.percentile(lat, 95)) if lat else float("nan")
            out[f"{key}_underruns_per_10"] = sum(r["underruns"]) * 10 / answers
            heard_gaps = [g for g in r["gaps_ms"] if g > GAP_MS]
            out[f"{key}_gapped_per_10"] = len(heard_gaps) * 10 / max(1, len(r["gaps_ms"]))
            chosen = [c for c in r["chosen_ms"] if c]
            out[f"{key}_chosen_ms"] = float(chosen[-1]) if chosen else float("nan")
            print(
                f"{name} link, {answers} answers: device-added playout latency (first audio "
                f"received → first sample in the room) p50 {out[f'{key}_latency_p50_ms']:.0f} ms, "
                f"p95 {out[f'{key}_latency_p95_ms']:.0f} ms; underruns {sum(r['underruns'])} "
                f"({out[f'{key}_underruns_per_10']:.1f} per 10 answers); playout delay chosen per "
                f"answer: {', '.join(f'{c:.0f}' for c in chosen) or 'fixed'} ms"
            )
            print(f"    latencies: {', '.join(f'{x:.0f}' for x in lat)} ms")
            print(
                "    link jitter measured per answer (lateness against its earliest chunk): "
                f"{', '.join(f'{x:.0f}' for x in r['peaks_ms'])} ms"
            )
            print(
                f"    gaps heard in the room, by content: {', '.join(f'{g:.0f}' for g in r['gaps_ms'])}"
                f" ms: {out[f'{key}_gapped_per_10']:.1f} answers per 10 with a gap over {GAP_MS} ms"
            )
    print("targets: clean link ≤ 40 ms p50; 50±30 ms link ≤ 1 underrun per 10 answers")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ANSWERS)
