"""Deterministic synthetic speech: espeak-ng, resampled with `sox -R` (no random dither).

The simulator's answers, the demo's scripted user and the test corpus all speak through here.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


def available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def espeak_pcm(text: str, rate: int) -> bytes:
    """int16 mono PCM of ``text`` at ``rate``; raises OSError/SubprocessError on failure."""
    with tempfile.TemporaryDirectory() as tmp:
        wav, raw = Path(tmp, "s.wav"), Path(tmp, "s.raw")
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-w", str(wav), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
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
