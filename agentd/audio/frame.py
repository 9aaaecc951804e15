"""Audio frames that know what they are, and the one framer that cuts PCM into them.

A frame carries its rate, sample width, channels and the time of its first sample, so "how long
was that" is asked of the frame (like wyoming's ``AudioChunk``) instead of being recomputed from
a frame-size constant that a config key can silently make wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from agentd.audio.pcm import to_float, to_int16


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """Little-endian signed PCM; ``timestamp`` is the monotonic time of its first sample."""

    audio: bytes
    rate: int
    width: int = 2
    channels: int = 1
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.width <= 0 or self.channels <= 0:
            raise ValueError(
                f"audio frame needs a positive rate, width and channels "
                f"(got {self.rate} Hz, {self.width} bytes, {self.channels} channels)"
            )
        if len(self.audio) % (self.width * self.channels):
            raise ValueError(
                f"audio frame of {len(self.audio)} bytes is not whole samples of "
                f"{self.width} bytes × {self.channels} channels"
            )

    @property
    def samples(self) -> int:
        """Samples per channel."""
        return len(self.audio) // (self.width * self.channels)

    @property
    def seconds(self) -> float:
        return self.samples / self.rate

    @property
    def milliseconds(self) -> int:
        return self.samples * 1000 // self.rate

    @property
    def end(self) -> float:
        """When its last sample ends."""
        return self.timestamp + self.seconds

    # ------------------------------------------------------------ converters

    @classmethod
    def from_floats(cls, x: np.ndarray, rate: int, timestamp: float = 0.0) -> AudioFrame:
        """float32 mono in [-1, 1) → a 16-bit mono frame (clipped)."""
        return cls(to_int16(x), rate, timestamp=timestamp)

    def array(self) -> np.ndarray:
        """The samples as int16 (interleaved when there are several channels)."""
        self._need_int16()
        return np.frombuffer(self.audio, dtype="<i2")

    def floats(self) -> np.ndarray:
        """The samples as float32 in [-1, 1)."""
        self._need_int16()
        return to_float(self.audio)

    def _need_int16(self) -> None:
        if self.width != 2:
            raise ValueError(f"{self.width * 8}-bit frame where 16-bit PCM is needed")


def join(frames: Iterable[AudioFrame]) -> AudioFrame:
    """Consecutive frames of one format as one frame starting at the first one."""
    fs = list(frames)
    if not fs:
        raise ValueError("no frames to join")
    first = fs[0]
    for f in fs[1:]:
        if (f.rate, f.width, f.channels) != (first.rate, first.width, first.channels):
            raise ValueError(
                f"cannot join a {f.rate} Hz/{f.width}×{f.channels} frame to a "
                f"{first.rate} Hz/{first.width}×{first.channels} one"
            )
    return AudioFrame(
        b"".join(f.audio for f in fs), first.rate, first.width, first.channels, first.timestamp
    )


class Framer:
    """Cuts a stream of PCM chunks of any size into frames of exactly ``ms``.

    Timestamps follow the stream from ``start`` (sample-exact), or, when a push says when its
    last sample was captured (``end``), are anchored to that moment: a capture thread's clock
    then wins over a sound card's drift and over audio lost in an overrun.
    """

    def __init__(
        self, rate: int, ms: int, width: int = 2, channels: int = 1, start: float = 0.0
    ) -> None:
        self.rate, self.width, self.channels = rate, width, channels
        self.size = rate * ms // 1000 * width * channels  # bytes per frame
        if self.size <= 0:
            raise ValueError(f"a {ms} ms frame at {rate} Hz holds no sample")
        self._buf = b""
        self._t = start  # time of the first buffered byte

    def _time(self, nbytes: int) -> float:
        return nbytes / (self.width * self.channels) / self.rate

    def push(self, pcm: bytes, end: float | None = None) -> list[AudioFrame]:
        buf = self._buf + pcm if self._buf else pcm
        if end is not None:
            self._t = end - self._time(len(buf))
        n = len(buf) // self.size
        out = [
            AudioFrame(
                buf[i * self.size : (i + 1) * self.size],
                self.rate,
                self.width,
                self.channels,
                self._t + self._time(i * self.size),
            )
            for i in range(n)
        ]
        self._buf = buf[n * self.size :]
        self._t += self._time(n * self.size)
        return out

    def flush(self) -> AudioFrame | None:
        """The shorter remainder, if any (end of a stream that needs every sample)."""
        if not self._buf:
            return None
        f = AudioFrame(self._buf, self.rate, self.width, self.channels, self._t)
        self._t += f.seconds
        self._buf = b""
        return f


def chop(
    pcm: bytes,
    rate: int,
    ms: int,
    *,
    start: float = 0.0,
    tail: bool = False,
    width: int = 2,
    channels: int = 1,
) -> list[AudioFrame]:
    """All of ``pcm`` as ``ms`` frames from ``start``; the shorter remainder too if ``tail``."""
    framer = Framer(rate, ms, width, channels, start)
    frames = framer.push(pcm)
    if tail and (rest := framer.flush()) is not None:
        frames.append(rest)
    return frames
