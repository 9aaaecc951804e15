"""Sound cues generated in code (no audio files to install): short tones with soft edges."""

from __future__ import annotations

import numpy as np

from agentd.audio.pcm import to_int16

CUE_RATE = 24000

#: name → list of (frequency Hz, duration ms); 0 Hz is a pause.
CUES: dict[str, list[tuple[float, int]]] = {
    "listen_start": [(660, 70), (880, 90)],
    "listen_end": [(880, 70), (660, 90)],
    "short": [(440, 60)],
    "error": [(300, 120), (0, 80), (300, 120), (0, 80), (220, 250)],
    "connected": [(523, 80), (659, 80), (784, 120)],
    # problems (service.PROBLEM_TEXT names them in `ctl status`): each its own sound, once
    "offline": [(659, 150), (0, 60), (440, 300)],  # network down: two falling tones
    "auth": [(196, 220), (0, 120), (196, 220)],  # key rejected: two low buzzes
    "quota": [(392, 90), (0, 60), (392, 90), (0, 60), (392, 90), (0, 60), (262, 300)],
}


def tone(freq: float, ms: int, rate: int = CUE_RATE) -> np.ndarray:
    n = rate * ms // 1000
    if freq <= 0:
        return np.zeros(n, np.float32)
    t = np.arange(n) / rate
    edge = min(n // 2, rate * 8 // 1000)  # 8 ms fades: no clicks
    env = np.ones(n, np.float32)
    env[:edge] = np.linspace(0, 1, edge)
    env[n - edge :] = np.linspace(1, 0, edge)
    return (np.sin(2 * np.pi * freq * t) * env).astype(np.float32)


def cue_pcm(name: str, volume: float, rate: int = CUE_RATE) -> bytes:
    """int16 mono PCM of cue ``name`` at ``volume`` (0..1)."""
    x = np.concatenate([tone(f, ms, rate) for f, ms in CUES[name]])
    return to_int16(x, volume * 0.8)
