"""The uplink: turn speech on its way to the server, and the copy held for an outage.

Pure (no sockets, no clock): the state machine decides what is sent and what is held
(:class:`agentd.conversation.Uplink`); this converts the voice gate's audio to the API's
input rate and keeps the held copy, bounded to one whole turn, until it is replayed or
dropped.
"""

from __future__ import annotations

from collections import deque

from agentd.audio.frame import AudioFrame
from agentd.audio.pcm import to_int16
from agentd.audio.resample import VAD_RATE, StreamResampler


class Uplink:
    """Rate conversion for one turn at a time, plus the held audio of that turn."""

    def __init__(self, rate: int, max_held_s: float, in_rate: int = VAD_RATE) -> None:
        self._rs = StreamResampler(in_rate, rate)
        self._held: deque[bytes] = deque()
        self._held_bytes = 0
        self.configure(rate, max_held_s)

    @property
    def rate(self) -> int:
        return self._rs.out_rate

    def configure(self, rate: int, max_held_s: float) -> None:
        """New settings (a reload, between turns): the API rate and the longest turn."""
        if rate != self._rs.out_rate:
            self._rs = StreamResampler(self._rs.in_rate, rate)
        self.limit_bytes = int(max_held_s * rate * 2)

    def new_turn(self) -> None:
        """A turn starts: no resampler history and nothing held from the one before."""
        self._rs.reset()
        self.clear()

    def convert(self, frame: AudioFrame) -> bytes:
        """A frame (the gate's 16 kHz) → PCM16 at the API's input rate, continuous in a turn."""
        if frame.rate != self._rs.in_rate:  # a frame at another rate: a resampler for it
            self._rs = StreamResampler(frame.rate, self._rs.out_rate)
        return to_int16(self._rs.process(frame.array()))

    def hold(self, pcm: bytes) -> None:
        """Keep converted audio for a replay; the oldest goes beyond one whole turn."""
        self._held.append(pcm)
        self._held_bytes += len(pcm)
        while self._held_bytes > self.limit_bytes and self._held:
            self._held_bytes -= len(self._held.popleft())

    def take(self) -> list[bytes]:
        """Everything held, oldest first; nothing is held afterwards."""
        chunks = list(self._held)
        self.clear()
        return chunks

    def clear(self) -> None:
        self._held.clear()
        self._held_bytes = 0

    @property
    def held_ms(self) -> int:
        return self._held_bytes * 1000 // (2 * self.rate)
