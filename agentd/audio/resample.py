"""Streaming sample-rate conversion (soxr)."""

from __future__ import annotations

import numpy as np
import soxr

from agentd.audio.pcm import saturate, to_float

VAD_RATE = 16000


class StreamResampler:
    """int16 or float mono in, float32 mono out, continuous across chunks; a no-op for equal rates."""

    def __init__(
        self, in_rate: int, out_rate: float, quality: str = "HQ", steady: bool = False
    ) -> None:
        """``steady``: soxr's variable-rate engine, which hands out every chunk's worth less a
        constant 10–14 ms (flat to 11 kHz, images under -120 dB) where the fixed-rate engines
        release output in blocks (24 → 48 kHz at LQ: 2 ms short after the first 100 ms chunk,
        20 ms short after the ninth, then a block catches up), at ~4× their CPU. ``out_rate``
        need not be whole: the echo canceller's far end is resampled by the clocks' drift."""
        self.in_rate, self.out_rate = in_rate, out_rate
        self._rs = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="float32", quality=quality, vr=steady
            )
        )

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """``samples``: float32 in [-1, 1) or int16; returns float32."""
        x = to_float(samples) if samples.dtype == np.int16 else samples
        if self._rs is None:
            return x.astype(np.float32, copy=False)
        return self._rs.resample_chunk(x.astype(np.float32, copy=False), last=last)

    def process_pcm(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """int16 in, int16 out (clipped), on the float engine at the int16 scale: no
        conversion to [-1, 1) and back (half the CPU of process + to_int16 for the echo
        canceller's far end), and no dither (soxr's own int16 engine dithers even digital
        silence, and the far end's silence must stay zeros). A stream fed this way stays so."""
        if self._rs is None:
            return samples.astype(np.int16)  # (a copy: the caller may reuse its buffer)
        y = self._rs.resample_chunk(samples.astype(np.float32), last=last)
        return saturate(y)

    def reset(self) -> None:
        if self._rs is not None:
            self._rs.clear()
