"""Deterministic synthetic speech: espeak-ng, resampled with `sox -R` (no random dither).

The simulator's answers, the demo's scripted user, the tests and the benches all speak through
here: the one place that runs espeak-ng and sox.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path


def available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def espeak_pcm(text: str, rate: int) -> bytes:
    """int16 mono PCM of ``text`` at ``rate``; raises OSError/SubprocessError on failure."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp, "s.wav")
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-w", str(wav), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return wav_pcm(wav, rate)


def wav_pcm(wav: Path, rate: int) -> bytes:
    """Any WAV (espeak-ng, flite, festival) as int16 mono PCM at ``rate``, repeatably."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "s.raw")
        subprocess.run(
            [
                "sox",
                "-R",
                str(wav),
                "-r",
                str(rate),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                str(raw),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return raw.read_bytes()


def write_wav(path: Path, pcm: bytes, rate: int) -> Path:
    """int16 mono PCM as a WAV file (for paplay/aplay)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path
