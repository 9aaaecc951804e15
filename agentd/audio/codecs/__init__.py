"""The streaming codec layer between the wire and PCM: pure, sans-I/O, one object per stream.

``Decoder.feed(bytes) -> pcm`` / ``flush()`` / ``reset()`` and ``Encoder.encode(pcm) ->
packets`` / ``flush()`` / ``reset()``; PCM is always int16 mono little-endian. The daemon
keeps ONE decoder per response (reset on a new response, cancel, truncate and reconnect) and
feeds it every delta in order, so the output is the same however the server cut the stream.
What a response holds is sniffed from its first delta (``OggS`` → Ogg Opus, ``ID3``/MPEG sync
→ MP3, ``RIFF`` → WAV, else what the session asked for).
"""

from __future__ import annotations

import struct
from typing import Literal, Protocol

from agentd.audio.codecs.base import CodecUnavailable
from agentd.audio.codecs.g711 import G711Decoder, G711Encoder
from agentd.audio.codecs.mp3 import Mp3Decoder, is_frame_header
from agentd.audio.codecs.opus import OggOpusDecoder, OpusEncoder, OpusPacketDecoder

WireFormat = Literal["pcm", "opus", "mp3", "g711_ulaw", "g711_alaw"]
WIRE_FORMATS: tuple[str, ...] = ("pcm", "opus", "mp3", "g711_ulaw", "g711_alaw")

__all__ = [
    "WIRE_FORMATS",
    "CodecUnavailable",
    "Decoder",
    "Encoder",
    "WireFormat",
    "decoder",
    "encoder",
    "missing",
]


class Decoder(Protocol):
    rate: int

    def feed(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...
    def reset(self) -> None: ...


class Encoder(Protocol):
    rate: int

    def encode(self, pcm: bytes) -> list[bytes]: ...
    def flush(self) -> list[bytes]: ...
    def reset(self) -> None: ...


class PcmDecoder:
    """PCM16 passes through; an odd byte waits for its other half in the next delta."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._odd = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._odd + data if self._odd else data
        cut = len(buf) // 2 * 2
        self._odd = buf[cut:]
        return buf[:cut]

    def flush(self) -> bytes:
        self._odd = b""
        return b""

    def reset(self) -> None:
        self._odd = b""


class PcmEncoder:
    """PCM16 passes through, one packet per chunk."""

    def __init__(self, rate: int) -> None:
        self.rate = rate

    def encode(self, pcm: bytes) -> list[bytes]:
        return [pcm] if pcm else []

    def flush(self) -> list[bytes]:
        return []

    def reset(self) -> None:
        """Nothing to forget."""


class WavDecoder:
    """A RIFF/WAVE stream of PCM16: the header (however cut) is dropped, the data passes."""

    MAX_HEADER = 4096

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.reset()

    def reset(self) -> None:
        self._head = b""
        self._pcm: PcmDecoder | None = None

    def feed(self, data: bytes) -> bytes:
        if self._pcm is not None:
            return self._pcm.feed(data)
        self._head += data
        pos = 12
        while pos + 8 <= len(self._head):
            tag, size = self._head[pos : pos + 4], struct.unpack_from("<I", self._head, pos + 4)[0]
            if tag == b"data":
                self._pcm = PcmDecoder(self.rate)
                return self._pcm.feed(self._head[pos + 8 :])
            pos += 8 + size + (size & 1)
        if len(self._head) > self.MAX_HEADER:  # no data chunk: not WAV after all
            self._pcm = PcmDecoder(self.rate)
        return b""

    def flush(self) -> bytes:
        return b""


def sniff(first: bytes, fmt: str) -> str:
    """What a response's first delta holds: ogg | mp3 | wav | ``fmt`` (the session's)."""
    if fmt in ("pcm", "g711_ulaw", "g711_alaw"):
        return fmt  # uncompressed: any byte pattern is valid audio
    if first.startswith(b"OggS"):
        return "ogg"
    if first.startswith(b"RIFF") and first[8:12] in (b"WAVE", b""):
        return "wav"
    if first.startswith(b"ID3") or is_frame_header(first):
        return "mp3"
    return fmt


class StreamDecoder:
    """One response's decoder: picks the codec from the first delta, then feeds it."""

    def __init__(self, fmt: str, rate: int) -> None:
        self.format, self.rate = fmt, rate
        self.kind: str | None = None
        self._dec: Decoder | None = None

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self._dec is None:
            self.kind = sniff(data, self.format)
            self._dec = _make(self.kind, self.rate)
        return self._dec.feed(data)

    def flush(self) -> bytes:
        return self._dec.flush() if self._dec is not None else b""

    def reset(self) -> None:
        """A new stream: the next delta is sniffed again."""
        self._dec, self.kind = None, None


def _make(kind: str, rate: int) -> Decoder:
    match kind:
        case "ogg":
            return OggOpusDecoder(rate)
        case "opus":
            return OpusPacketDecoder(rate)
        case "mp3":
            return Mp3Decoder(rate)
        case "wav":
            return WavDecoder(rate)
        case "g711_ulaw":
            return G711Decoder("ulaw")
        case "g711_alaw":
            return G711Decoder("alaw")
    return PcmDecoder(rate)


def decoder(fmt: str, rate: int) -> StreamDecoder:
    """The downlink decoder for a session's output format at its rate."""
    return StreamDecoder(fmt, rate)


def encoder(
    fmt: str, rate: int, *, frame_ms: int = 60, bitrate: int = 24000, complexity: int = 5
) -> Encoder:
    """The uplink encoder: Opus packets of ``frame_ms``, G.711 bytes, or PCM as it comes."""
    match fmt:
        case "opus":
            return OpusEncoder(rate, frame_ms, bitrate, complexity)
        case "g711_ulaw":
            return G711Encoder("ulaw")
        case "g711_alaw":
            return G711Encoder("alaw")
    return PcmEncoder(rate)


def missing(fmt: str) -> str | None:
    """Why ``fmt`` cannot be used on this machine (what to install), or None."""
    try:
        if fmt == "opus":
            from agentd.audio.codecs import opus

            opus.library()
        elif fmt == "mp3":
            from agentd.audio.codecs import mp3

            mp3.library()
    except CodecUnavailable as exc:
        return str(exc)
    return None
