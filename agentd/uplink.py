"""The uplink: turn speech on its way to the server, and the copy held for an outage.

Pure (no sockets, no clock): the state machine decides what is sent and what is held
(:class:`agentd.conversation.Uplink`); this converts the voice gate's audio to the API's
input rate, encodes it in the session's wire format (audio.wire.input: one Opus packet per
append, G.711 bytes, or PCM as it comes) and keeps the held copy, bounded to one whole turn,
until it is replayed or dropped.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from agentd.audio import codecs
from agentd.audio.frame import AudioFrame
from agentd.audio.pcm import to_int16
from agentd.audio.resample import VAD_RATE, StreamResampler
from agentd.config.schema import WireSettings

OPUS_PACKET_MS = 60  # one packet per append: the size xiaozhi-style servers expect


class Uplink:
    """Rate conversion for one turn at a time, plus the held audio of that turn."""

    def __init__(
        self,
        rate: int,
        max_held_s: float,
        in_rate: int = VAD_RATE,
        wire: WireSettings | None = None,
    ) -> None:
        self._rs = StreamResampler(in_rate, rate)
        self._held: deque[tuple[bytes, float]] = deque()
        self._held_s = 0.0
        self.format = ""
        self.configure(rate, max_held_s, wire)

    @property
    def rate(self) -> int:
        return int(self._rs.out_rate)  # (whole here; the far end's may not be)

    def configure(self, rate: int, max_held_s: float, wire: WireSettings | None = None) -> None:
        """New settings (a reload, between turns, or the fallback to PCM): the API rate, the
        longest turn, the wire format."""
        if rate != self._rs.out_rate:
            self._rs = StreamResampler(self._rs.in_rate, rate)
        self.limit_s = max_held_s
        wire = wire or WireSettings()
        self.format = wire.input
        self._enc = codecs.encoder(
            wire.input,
            rate,
            frame_ms=OPUS_PACKET_MS,
            bitrate=wire.opus_kbps * 1000,
            complexity=wire.opus_complexity,
        )

    def new_turn(self) -> None:
        """A turn starts: no resampler or encoder history and nothing held from the one
        before."""
        self._rs.reset()
        self._enc.reset()
        self.clear()

    def encode(self, pcm: bytes) -> list[bytes]:
        """Converted PCM → the packets to append (an Opus packet waits until it is whole)."""
        return self._enc.encode(pcm)

    def finish(self) -> list[bytes]:
        """The turn is committed: what the resampler still holds (its look-ahead: up to
        ~37 ms of the turn's newest audio, which the server would otherwise never hear) and
        then the encoder's remainder, as the last packets."""
        tail = to_int16(self._rs.process(np.zeros(0, np.float32), last=True))
        self._rs.reset()
        return [*(self._enc.encode(tail) if tail else []), *self._enc.flush()]

    def seconds(self, packet: bytes) -> float:
        """How much audio a packet of this uplink holds."""
        if self.format == "opus":
            return OPUS_PACKET_MS / 1000
        per_sample = 1 if self.format.startswith("g711") else 2
        return len(packet) / per_sample / self.rate

    def convert(self, frame: AudioFrame) -> bytes:
        """A frame (the gate's 16 kHz) → PCM16 at the API's input rate, continuous in a turn."""
        if frame.rate != self._rs.in_rate:  # a frame at another rate: a resampler for it
            self._rs = StreamResampler(frame.rate, self._rs.out_rate)
        return to_int16(self._rs.process(frame.array()))

    def hold(self, packet: bytes) -> None:
        """Keep an encoded packet for a replay; the oldest goes beyond one whole turn."""
        s = self.seconds(packet)
        self._held.append((packet, s))
        self._held_s += s
        while self._held_s > self.limit_s + 1e-9 and self._held:
            self._held_s -= self._held.popleft()[1]

    def take(self) -> list[bytes]:
        """Everything held, oldest first; nothing is held afterwards."""
        chunks = [p for p, _ in self._held]
        self.clear()
        return chunks

    def clear(self) -> None:
        self._held.clear()
        self._held_s = 0.0

    @property
    def held_ms(self) -> int:
        return round(self._held_s * 1000)


#: words in an error message that say the server did not take our input audio format
_FORMAT_WORDS = ("format", "codec", "opus", "pcmu", "pcma", "g711", "decode")


def format_rejected(code: str | None, message: str) -> bool:
    """Does a server error say it cannot take the input format (``invalid_value`` on
    ``input_audio_format``, "unsupported audio format", "failed to decode audio")?"""
    text = f"{code or ''} {message}".lower()
    return "audio" in text and any(w in text for w in _FORMAT_WORDS)
