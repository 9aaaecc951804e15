"""CPU seconds per audio-second of the audio paths at a 48 kHz stereo card rate.

Capture: card frames (48 kHz stereo int16, 20 ms periods) → channel pick → soxr to 16 kHz →
20 ms framing → webrtcvad, the same calls the capture thread and voice gate make.
Playback: 100 ms API deltas (24 kHz int16) → soxr to 48 kHz → volume → stereo interleave.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import webrtcvad

from agentd.audio.frame import Framer, chop
from agentd.audio.pcm import to_float, to_int16
from agentd.audio.resample import StreamResampler

SECONDS = 60
CARD = 48000


def capture_path(periods: list[bytes]) -> int:
    rs, framer, vad = StreamResampler(CARD, 16000, "LQ"), Framer(16000, 20), webrtcvad.Vad(2)
    voiced = 0
    for data in periods:
        x = np.frombuffer(data, "<i2").reshape(-1, 2)[:, 0]
        for f in framer.push(to_int16(rs.process(x))):
            voiced += vad.is_speech(f.audio, 16000)
    return voiced


def playback_path(deltas: list[bytes]) -> int:
    rs, total = StreamResampler(24000, CARD, quality="LQ"), 0
    for d in deltas:
        y = rs.process(to_float(d))
        s = np.frombuffer(to_int16(y), "<i2")
        total += np.repeat(s, 2).nbytes
    return total


def main() -> dict[str, float]:
    rng = np.random.default_rng(0)
    card = (rng.standard_normal(CARD * SECONDS * 2) * 2000).astype("<i2").tobytes()
    periods = [f.audio for f in chop(card, CARD, 20, channels=2)]
    api = (rng.standard_normal(24000 * SECONDS) * 2000).astype("<i2").tobytes()
    deltas = [f.audio for f in chop(api, 24000, 100)]
    out = {}
    for name, fn, arg in (("capture", capture_path, periods), ("playback", playback_path, deltas)):
        t0 = time.process_time()
        fn(arg)
        out[name] = (time.process_time() - t0) / SECONDS
    print(
        f"audio path CPU per audio-second at 48 kHz stereo: capture→16 kHz→VAD "
        f"{out['capture'] * 1e3:.2f} ms, playback 24→48 kHz {out['playback'] * 1e3:.2f} ms"
    )
    return out


if __name__ == "__main__":
    main()
