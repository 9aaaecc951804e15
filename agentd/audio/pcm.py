"""int16 PCM ↔ float32 samples with one scale (2**15) for every module.

Two scales in one pipeline (÷32768 one way, ×32767 the other) shift every round trip's level
and make full scale ambiguous; with one, int16 → float → int16 is exact.
"""

from __future__ import annotations

import math

import numpy as np

SCALE = 32768.0  # 2**15: int16 full scale maps to [-1, 1)


def to_float(pcm: bytes | np.ndarray) -> np.ndarray:
    """Little-endian int16 bytes (a trailing odd byte ignored) or an int16 array → float32."""
    if isinstance(pcm, np.ndarray):
        return pcm.astype(np.float32) / np.float32(SCALE)
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / np.float32(
        SCALE
    )


def to_int16(x: np.ndarray, gain: float = 1.0) -> bytes:
    """float samples × ``gain`` → little-endian int16 bytes, clipped to the int16 range."""
    return saturate(np.asarray(x, dtype=np.float32) * np.float32(gain * SCALE)).tobytes()


def saturate(y: np.ndarray) -> np.ndarray:
    """Samples already at the int16 scale → int16, clipped (in place where ``y`` is float32)."""
    if y.dtype == np.float32:  # (float32 bounds: a Python int is converted at every call)
        y = np.minimum(np.maximum(y, _LOW, out=y), _HIGH, out=y)
    else:
        y = np.clip(y, -32768, 32767)
    return y.astype("<i2")


_LOW, _HIGH = np.float32(-SCALE), np.float32(SCALE - 1)


def db(energy: float) -> float:
    """Mean-square energy (full scale 1.0) in dBFS."""
    return 10 * math.log10(max(energy, 1e-12))
