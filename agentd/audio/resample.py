"""Streaming sample-rate conversion (soxr) and the small PCM helpers around it."""

from __future__ import annotations

import numpy as np
import soxr

VAD_RATE = 16000


class StreamResampler:
    """int16 mono in, int16 mono out, continuous across chunks; a no-op for equal rates."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._rs = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        )

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """``samples``: float32 in [-1, 1) or int16; returns float32."""
        x = samples.astype(np.float32) / 32768.0 if samples.dtype == np.int16 else samples
        if self._rs is None:
            return x.astype(np.float32, copy=False)
        return self._rs.resample_chunk(x.astype(np.float32, copy=False), last=last)

    def reset(self) -> None:
        if self._rs is not None:
            self._rs.clear()


def to_int16(x: np.ndarray, gain: float = 1.0) -> bytes:
    """float32 → clipped little-endian int16 bytes."""
    y = np.clip(x * (gain * 32767.0), -32768, 32767)
    return y.astype("<i2").tobytes()


def from_int16(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
