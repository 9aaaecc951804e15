"""`agentd test-audio`: record a few seconds, report levels per channel, play it back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from agentd.audio.pcm import SCALE, to_float
from agentd.config import ConfigError, load


def _db(v: float) -> str:
    return f"{20 * np.log10(v):6.1f} dBFS" if v > 0 else "  -inf dBFS"


def channel_report(samples: np.ndarray) -> list[str]:
    """Peak/RMS in dBFS and clipped-sample count for each column of int16 ``samples``."""
    lines = []
    for ch in range(samples.shape[1]):
        x = to_float(samples[:, ch]).astype(np.float64)
        peak = float(np.abs(x).max(initial=0))
        rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
        clipped = int(np.count_nonzero(np.abs(x) >= (SCALE - 1) / SCALE))  # at int16 full scale

        verdict = (
            "clipping: lower the mic gain (alsamixer)"
            if clipped
            else ("silent: wrong device or channel?" if peak < 0.001 else "ok")
        )
        lines.append(
            f"  channel {ch}: peak {_db(peak)}  rms {_db(rms)}  clipped {clipped}  {verdict}"
        )
    return lines


def record(device: str, rate: int, channels: int, seconds: float) -> np.ndarray:
    import alsaaudio

    pcm = alsaaudio.PCM(
        alsaaudio.PCM_CAPTURE,
        alsaaudio.PCM_NORMAL,
        rate=rate,
        channels=channels,
        format=alsaaudio.PCM_FORMAT_S16_LE,
        periodsize=rate // 50,
        device=device,
    )
    info = pcm.info()
    channels = int(info["channels"])
    chunks, total, deadline = [], 0, time.monotonic() + seconds + 5
    want = int(int(info["rate"]) * seconds)
    while total < want and time.monotonic() < deadline:
        n, data = pcm.read()
        if n > 0:
            chunks.append(np.frombuffer(data, "<i2")[: n * channels])
            total += n
    pcm.close()
    x = np.concatenate(chunks) if chunks else np.zeros(0, "<i2")
    return x.reshape(-1, channels)


def test_audio_main(config_path: Path, seconds: float = 3.0) -> int:
    try:
        cfg = load(config_path, require_key=False).config
    except ConfigError as exc:
        for p in exc.problems:
            print(p)
        return 1
    import alsaaudio

    from agentd.audio.alsa import Playback, describe_alsa_error

    inp, out = cfg.audio.input, cfg.audio.output
    print(
        f"Recording {seconds:g} s from {inp.device!r} ({inp.rate} Hz, {inp.channels} ch): speak now"
    )
    try:
        samples = record(inp.device, inp.rate, inp.channels, seconds)
    except alsaaudio.ALSAAudioError as exc:
        print(describe_alsa_error(exc, inp.device, "capture"))
        return 1
    print("\n".join(channel_report(samples)))
    mono = samples[:, min(inp.channel, samples.shape[1] - 1)].astype("<i2").tobytes()
    print(f"Playing it back on {out.device!r}")
    pb = Playback(out, inp.rate)
    pb.start()
    try:
        if not pb.opened.wait(3):
            print(pb.error or f"playback device {out.device!r} did not open")
            return 1
        pb.play(mono, last=True)
        while pb.busy():
            asyncio.run(asyncio.sleep(0.05))
    finally:
        pb.stop()
    return 0
