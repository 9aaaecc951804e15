"""What a held-up daemon does to the echo behind its far end, in the PulseAudio room (issue 22).

agentd's own Playback (continuous, as ``echo.mode: aec`` runs it, tapped by a FarEnd) plays
noise bursts into the room and its own Capture hears the room's monitor, each frame taking its
far end from the FarEnd as the daemon's canceller does. The room is a pure delay, so the echo's
delay behind the far end handed is the same at every burst unless something moved it. A
helper stops this whole process (SIGSTOP) for 5 ms up to STALL ms every 0.3-1.5 s, as a
slow virtual machine, a Pi swapping or a busy SD card holds a daemon up, while the sound
server runs on. Per stall limit: the bursts whose echo moved against the one before (by more
than half a sample), by how much, and which of them came with the speaker's device counted
as run dry (FarEnd.starved: the daemon knows and the answer proves its delay again) in the
second before. A move it does not know of is what SlipWatch (agentd/audio/echo.py) is for.

    .venv/bin/python bench/stall_slips.py [SECONDS] [STALL_MS ...]
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import rigs

rigs.install_asoundrc()

import numpy as np  # noqa: E402

from agentd.audio.alsa import Capture, Playback  # noqa: E402
from agentd.audio.echo import FarEnd  # noqa: E402
from agentd.audio.frame import AudioFrame  # noqa: E402
from agentd.config import InputSettings, OutputSettings  # noqa: E402

RATE = 16000
SOURCE_RATE = 24000  # the answers' audio, as the API sends it
STALLER = """
import os, random, signal, sys, time
pid, most = int(sys.argv[1]), float(sys.argv[2])
random.seed(1)
time.sleep(3)
while True:
    time.sleep(random.uniform(0.3, 1.5))
    os.kill(pid, signal.SIGSTOP)
    time.sleep(random.uniform(0.005, most))
    os.kill(pid, signal.SIGCONT)
"""


def _bursts(seconds: float) -> list[tuple[np.ndarray, float]]:
    """Band-limited noise bursts (0.5-1.2 s, 0.1-4 kHz) and the pause after each (s)."""
    rng = np.random.default_rng(0)
    out, total = [], 0.0
    while total < seconds:
        n = int(SOURCE_RATE * rng.uniform(0.5, 1.2))
        spectrum = np.fft.rfft(rng.standard_normal(n) * 3000)
        f = np.fft.rfftfreq(n, 1 / SOURCE_RATE)
        spectrum[(f > 4000) | (f < 100)] = 0
        pause = float(rng.choice([0.15, 0.3, 0.6, 1.5]))
        out.append((np.fft.irfft(spectrum, n).astype(np.int16), pause))
        total += n / SOURCE_RATE + pause
    return out


async def _run(seconds: float, stall_ms: float) -> tuple[np.ndarray, np.ndarray, list[float], int]:
    """Play the bursts with the process stalled up to ``stall_ms``: the microphone, the far end
    each frame took, the times (s into the microphone) the device was counted as run dry, and
    the speaker's underruns."""
    far = FarEnd()
    near: list[np.ndarray] = []
    taken: list[np.ndarray] = []
    starved: list[float] = []
    start: list[float] = []

    def on_frame(frame: AudioFrame) -> None:
        near.append(frame.array().copy())
        taken.append(far.take(frame.samples, frame.timestamp))
        if not start:
            start.append(frame.timestamp)

    counted = far.starved

    def starved_now() -> None:  # (on the playback thread)
        if far._mic is not None and start:
            starved.append(far._mic - start[0])
        counted()

    far.starved = starved_now  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    cap = Capture(InputSettings(device="mic", period_ms=20), loop, on_frame)
    pb = Playback(OutputSettings(device="spk"), SOURCE_RATE)
    pb.far_end, pb.continuous = far, True
    cap.start()
    pb.start()
    helper = None
    if stall_ms > 0:
        helper = subprocess.Popen(
            [sys.executable, "-c", STALLER, str(os.getpid()), str(stall_ms / 1000)]
        )
    try:
        await asyncio.sleep(2.0)
        for k, (burst, pause) in enumerate(_bursts(seconds)):
            pb.play(burst.tobytes(), item=f"b{k}", last=True)
            await asyncio.sleep(burst.size / SOURCE_RATE + pause)
        await asyncio.sleep(1.5)
    finally:
        if helper is not None:
            helper.kill()
            helper.wait()
            os.kill(os.getpid(), signal.SIGCONT)  # (in case it was killed between the two)
        pb.stop()
        cap.stop()
    return np.concatenate(near), np.concatenate(taken), starved, pb.stats.underruns


def _delays(near: np.ndarray, far: np.ndarray) -> list[tuple[float, float]]:
    """(time, delay in samples) of each burst's echo behind its far end: the peak of their
    whitened cross-correlation, to a fraction of a sample (the room is a pure delay)."""
    block = RATE // 100
    nb = far.size // block
    loud = (far[: nb * block].astype(np.float64).reshape(-1, block) ** 2).mean(1) > 300.0**2
    out = []
    for i in range(1, nb):
        if not loud[i] or loud[max(0, i - 10) : i].any():
            continue
        a = i * block
        m = min(8000, far.size - a - 4000)
        if m < 3000:
            break
        lo = max(0, a - 1600)
        y, x = near[lo : a + m + 3200].astype(np.float64), far[a : a + m].astype(np.float64)
        size = 1 << (y.size + x.size).bit_length()
        g = np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size))
        r = np.fft.irfft(g / np.maximum(np.abs(g), 1e-9) ** 0.85, size)[: y.size - x.size]
        k = int(np.clip(np.argmax(r), 1, r.size - 2))
        p, q, s = r[k - 1], r[k], r[k + 1]
        out.append((a / RATE, lo + k + 0.5 * (p - s) / (p - 2 * q + s) - a))
    return out


def main() -> None:
    args = [float(a) for a in sys.argv[1:]]
    seconds = args[0] if args else 40.0
    stalls = args[1:] or [0.0, 30.0, 45.0, 60.0]
    room = rigs.PulseRoom(rigs.PULSE_SOCKET.parent).start()
    try:
        for stall in stalls:
            near, far, starved, underruns = asyncio.run(_run(seconds, stall))
            delays = _delays(near, far)
            moves = [
                (t, d - prev) for (t, d), (_, prev) in zip(delays[1:], delays, strict=False)
                if abs(d - prev) > 0.5
            ]  # fmt: skip
            known = [any(t - 1.0 <= s <= t for s in starved) for t, _ in moves]
            sizes = ", ".join(f"{m:+.1f}" for _, m in moves) or "none"
            print(
                f"stalls up to {stall:g} ms: {len(moves)} of {len(delays) - 1} bursts' echo moved "
                f"(samples: {sizes}); {sum(known)} of them with the device counted as run dry "
                f"in the second before, {len(moves) - sum(known)} unknown to the daemon; run dry "
                f"{len(starved)}×, underruns {underruns}",
                flush=True,
            )
    finally:
        room.stop()


if __name__ == "__main__":
    main()
