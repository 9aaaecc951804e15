"""Acoustic echo cancellation, noise suppression and automatic gain on the microphone path:
an adapter around WebRTC's audio processing (AEC3, NS, AGC2) from ``pywebrtc-audio``, the
optional extra ``pip install 'agentd[aec]'``.

Why it is built this way (each point was measured, see issue 22 and bench/echo.py):
- the far end is the exact int16 audio handed to ALSA, tapped in Playback's writer
  (:class:`FarEnd`), so the reference is handed over before its echo can reach the mic;
- the canceller sees a reference frame for every microphone frame: zeros while nothing
  plays (skipping them attenuates the user afterwards);
- it is created once per daemon (a fresh one attenuates early double talk more);
- every call into the native library gets whole 10 ms blocks: other sizes are refused here
  with a ValueError (one such livekit call aborts the whole process);
- AEC3 finds the bulk delay itself (up to ~0.5 s), so no delay hint is given.

``pywebrtc-audio`` was chosen over ``livekit``: the same AEC3 within 1 dB, 0.4 MB instead of a
whole WebRTC stack, numpy only, no threads; both run under ``MemoryDenyWriteExecute``.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentd.audio.frame import AudioFrame
from agentd.audio.pcm import to_int16
from agentd.audio.resample import VAD_RATE, StreamResampler
from agentd.config import EchoSettings, InputSettings

BLOCK = VAD_RATE // 100  # 10 ms at 16 kHz: the only size the native library is handed
FAR_KEEP_S = 2.0  # far end waiting beyond this is stale (the mic stopped): dropped
EXTRA = "pip install 'agentd[aec]'"


class EchoUnavailable(RuntimeError):
    """The optional library is missing: the config asked for what the device cannot do."""


def library() -> Any:
    """The native module, or :class:`EchoUnavailable` saying how to install it."""
    try:
        import pywebrtc_audio
    except ImportError as exc:
        raise EchoUnavailable(
            f"needs the WebRTC audio processing library (pywebrtc-audio): {EXTRA}"
        ) from exc
    return pywebrtc_audio


def available() -> bool:
    try:
        library()
    except EchoUnavailable:
        return False
    return True


@dataclass(frozen=True, slots=True)
class EchoSetup:
    """What the microphone path does: ``aec`` (echo.mode), ``noise_suppression`` (0 off,
    1..4 = 6/12/18/21 dB), ``auto_gain`` (0 off, else the most gain in dB)."""

    aec: bool = False
    noise_suppression: int = 0
    auto_gain: int = 0

    @property
    def active(self) -> bool:
        return self.aec or self.noise_suppression > 0 or self.auto_gain > 0

    @classmethod
    def of(cls, echo: EchoSettings, mic: InputSettings) -> EchoSetup:
        """From the keys it reads: ``echo.mode``, ``audio.input.noise_suppression``/``auto_gain``."""
        return cls(echo.mode == "aec", mic.noise_suppression, mic.auto_gain)


class FarEnd:
    """The speaker's signal as written to ALSA, at 16 kHz, waiting for the microphone frames
    it can echo into. Written by the playback thread, read on the loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: deque[np.ndarray] = deque()
        self._held = 0
        self._rs: StreamResampler | None = None
        self.written_samples = 0  # 16 kHz samples tapped so far (for tests and status)

    def written(self, samples: np.ndarray, rate: int) -> None:
        """Playback's tap: int16 mono ``samples`` at the card ``rate`` just handed to ALSA."""
        if self._rs is None or self._rs.in_rate != rate:
            self._rs = StreamResampler(rate, VAD_RATE, quality="MQ")
        y = self._rs.process(samples)
        if not y.size:
            return
        x = np.frombuffer(to_int16(y), "<i2")
        with self._lock:
            self._chunks.append(x)
            self._held += x.size
            self.written_samples += x.size
            while self._held > FAR_KEEP_S * VAD_RATE and self._chunks:
                self._held -= self._chunks.popleft().size

    def dropped(self) -> None:
        """Playback dropped what ALSA held (a flush, a device fault): it never plays."""
        with self._lock:
            self._chunks.clear()
            self._held = 0

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` samples of the far end, zeros where nothing was played."""
        out = np.zeros(n, np.int16)
        got = 0
        with self._lock:
            while got < n and self._chunks:
                c = self._chunks[0]
                k = min(n - got, c.size)
                out[got : got + k] = c[:k]
                got += k
                if k == c.size:
                    self._chunks.popleft()
                else:
                    self._chunks[0] = c[k:]
            self._held -= got
        return out

    @property
    def held(self) -> int:
        with self._lock:
            return self._held


class EchoCanceller:
    """The microphone path's processing, created once per daemon: AEC3 against ``far``, then
    noise suppression, then automatic gain (last: gain inside the canceller's path raises the
    residual echo). Frames in and out are 16 kHz mono int16, whole multiples of 10 ms."""

    def __init__(self, setup: EchoSetup, far: FarEnd | None = None) -> None:
        lib = library()
        self.setup = setup
        self.far = far or FarEnd()
        self._aec = lib.EchoCanceller(VAD_RATE, 1) if setup.aec else None
        ns = setup.noise_suppression
        self._ns = lib.NoiseSuppressor(VAD_RATE, 1, level=ns - 1) if ns > 0 else None
        self._agc = (
            lib.GainController(VAD_RATE, 1, max_gain_db=float(setup.auto_gain))
            if setup.auto_gain > 0
            else None
        )
        self.frames = 0
        self._heard = 0  # 10 ms blocks with far-end sound processed: how much it has learned

    @property
    def heard_s(self) -> float:
        """Far-end sound the canceller has adapted on since it was made (seconds)."""
        return self._heard * BLOCK / VAD_RATE if self._aec is not None else 0.0

    def process(self, frame: AudioFrame) -> AudioFrame:
        """One capture frame through the chain; the far end advances by the same length."""
        if frame.rate != VAD_RATE or frame.width != 2 or frame.channels != 1:
            raise ValueError(
                f"the echo canceller takes 16 kHz 16-bit mono, got {frame.rate} Hz "
                f"{frame.width * 8}-bit ×{frame.channels}"
            )
        if frame.samples % BLOCK:
            raise ValueError(
                f"the echo canceller takes whole 10 ms blocks, got {frame.samples} samples "
                f"({frame.samples / VAD_RATE * 1000:g} ms)"
            )
        near = frame.array()
        out = np.empty_like(near)
        for i in range(0, near.size, BLOCK):
            x = np.ascontiguousarray(near[i : i + BLOCK])
            far = self.far.take(BLOCK)
            self._heard += bool(far.any())
            if self._aec is not None:
                x = self._aec.process(x, far)
            if self._ns is not None:
                x = self._ns.process(x)
            if self._agc is not None:
                x = self._agc.process(x)
            out[i : i + BLOCK] = x
        self.frames += 1
        return AudioFrame(out.astype("<i2").tobytes(), VAD_RATE, timestamp=frame.timestamp)


def make(setup: EchoSetup, far: FarEnd) -> EchoCanceller | None:
    """The daemon's canceller for ``setup``, or None when the microphone path is plain."""
    return EchoCanceller(setup, far) if setup.active else None
