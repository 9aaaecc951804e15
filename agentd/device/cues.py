"""Sound cues: short tones generated in code (no audio files to install), or the owner's own
WAV files (`sounds.files`), which the playback resamples to the card like speech."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from agentd.audio.pcm import to_float, to_int16
from agentd.config.schema import CueFiles

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


CUE_FILE_MAX_S = 10.0  # a cue is a cue: longer files are refused at check-config
#: sounds.files key → the cue names it replaces ("muted" has no generated tone: silent unless set)
FILE_CUES: dict[str, tuple[str, ...]] = {
    "listening": ("listen_start",),
    "done": ("listen_end",),
    "error": ("error",),
    "connected": ("connected",),
    "muted": ("muted",),
}


def load_wav(path: str) -> tuple[bytes, int]:
    """A PCM WAV file → (int16 mono PCM, its rate); channels are averaged. ValueError names
    what is wrong with the file in words a person can act on."""
    try:
        with wave.open(str(Path(path)), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.getnframes()
            if frames / rate > CUE_FILE_MAX_S:
                raise ValueError(
                    f"{path} is {frames / rate:.1f} s long; a cue may be at most "
                    f"{CUE_FILE_MAX_S:g} s"
                )
            data = w.readframes(frames)
    except FileNotFoundError:
        raise ValueError(f"file not found: {path}") from None
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(
            f"cannot read {path} as a PCM WAV file ({exc}); convert it with "
            "`sox IN -b 16 -e signed-integer OUT.wav`"
        ) from None
    if width not in (1, 2, 4):
        raise ValueError(f"{path}: {8 * width}-bit samples; use 8, 16 or 32-bit PCM")
    x: np.ndarray
    if width == 1:
        x = (np.frombuffer(data, np.uint8).astype(np.float32) - 128) / 128
    else:
        x = np.frombuffer(data, f"<i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
    x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    return to_int16(x), rate


class CueSounds:
    """Each cue's PCM and rate: the owner's file where one is set, else the generated tone
    (files are read once, when the settings are applied, not while a cue plays)."""

    def __init__(self, files: CueFiles, volume: float) -> None:
        self.volume = volume
        self._files: dict[str, tuple[bytes, int]] = {}
        paths = {
            "listening": files.listening,
            "done": files.done,
            "error": files.error,
            "connected": files.connected,
            "muted": files.muted,
        }
        for key, path in paths.items():
            if path is not None:
                pcm, rate = load_wav(path)
                for name in FILE_CUES[key]:
                    self._files[name] = (pcm, rate)

    def pcm(self, name: str) -> tuple[bytes, int] | None:
        """(int16 mono PCM, rate) of cue ``name`` at the cue volume; None when it has no sound."""
        if name in self._files:
            pcm, rate = self._files[name]
            return to_int16(to_float(pcm), self.volume), rate
        if name not in CUES:
            return None
        return cue_pcm(name, self.volume), CUE_RATE
