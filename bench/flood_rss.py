"""RSS of `agentd run` while the server floods answer audio at 50× real time.

The simulator (pace 50) answers the greeting with several minutes of speech, delivered in a
few seconds. The daemon must keep its memory bounded (the unit sets MemoryMax=256M): the
playback queue holds at most PLAYBACK_QUEUE_S of audio and refuses the rest, counted in
`ctl status` (playback_refused_ms). Prints the peak RSS (VmHWM) of the daemon process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DIR = Path(tempfile.mkdtemp(prefix="agentd-flood-"))
os.environ["XDG_CONFIG_HOME"] = str(DIR)  # before the first ALSA call

from agentd.audio.alsa import PLAYBACK_QUEUE_S  # noqa: E402
from agentd.control import request  # noqa: E402
from agentd.sim import Simulator  # noqa: E402
from agentd.sim.room import PulseRoom, asoundrc, write_asoundrc  # noqa: E402
from bench.daemon_rig import daemon_config  # noqa: E402

PACE = 50.0
BOUND_MB = 256  # MemoryMax= in the unit
SENTENCE = "This is a very long answer that the server sends far faster than real time. "


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def flood() -> dict[str, float]:
    async with Simulator("openai", pace=PACE) as sim:
        sim.reply = SENTENCE * 330  # ~24 minutes of speech
        audio_s = len(sim.speech.pcm(sim.reply, 24000)) / 48000  # synthesise before timing
        sock = DIR / "ctl.sock"
        cfg = daemon_config(
            DIR / "flood.yaml",
            sim.url,
            sock,
            agent={"greeting": "Tell me a long story."},
            audio={"output": {"buffer_ms": 60}},
        )
        env = {**os.environ, "OPENAI_API_KEY": ""}
        log = (DIR / "stderr.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "run", "--config", str(cfg)], env=env, stderr=log
        )
        try:
            t0 = time.monotonic()
            while not sim.client_events("response.create"):
                assert time.monotonic() - t0 < 20 and proc.poll() is None, "no greeting"
                await asyncio.sleep(0.05)
            start_rss = vm(proc.pid, "VmRSS")
            t_flood = time.monotonic()
            samples = []
            while time.monotonic() - t_flood < audio_s / PACE + 5:
                samples.append(vm(proc.pid, "VmRSS"))
                await asyncio.sleep(0.1)
            status = await asyncio.to_thread(request, sock, "status")
            peak = vm(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(5)
            log.close()
    return {
        "audio_s": audio_s,
        "flood_s": audio_s / PACE,
        "start_rss_mb": start_rss,
        "max_rss_mb": max(samples),
        "peak_rss_mb": peak,
        "refused_s": status.get("playback_refused_ms", 0) / 1000,
        "queue_limit_s": float(PLAYBACK_QUEUE_S),
    }


def main() -> dict[str, float]:
    room = PulseRoom(DIR / "pulse")
    write_asoundrc(DIR, asoundrc(room.socket))
    room.start()
    try:
        out = asyncio.run(flood())
    finally:
        room.stop()
    print(
        f"flood: {out['audio_s']:.0f} s of answer audio in {out['flood_s']:.1f} s ({PACE:.0f}× "
        f"real time); queue bound {out['queue_limit_s']:.0f} s, refused {out['refused_s']:.0f} s"
    )
    print(
        f"RSS of agentd run: {out['start_rss_mb']:.1f} MB before, max {out['max_rss_mb']:.1f} MB "
        f"during, peak (VmHWM) {out['peak_rss_mb']:.1f} MB (bound: MemoryMax={BOUND_MB}M)"
    )
    return out


if __name__ == "__main__":
    main()
