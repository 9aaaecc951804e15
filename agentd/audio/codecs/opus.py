"""Opus through ``opuslib-next`` (a ctypes binding) and Debian's libopus0.

Decoding takes raw packets (xStar's ``Audio16KHz16BitMonoOpus``: one packet per delta, no
container) or Ogg pages; each packet's duration is read from its TOC, up to 120 ms (any frame
duration is accepted), and a packet libopus cannot decode is concealed (packet-loss
concealment for the last packet's duration) so time is never dropped. Encoding is the
uplink's: 16 kHz mono, VOIP, fixed-length packets (60 ms by default).
"""

from __future__ import annotations

import importlib
import struct
from functools import cache
from types import ModuleType
from typing import Any

from agentd.audio.codecs.base import CodecUnavailable, CompressedDecoder
from agentd.audio.codecs.ogg import OggDemuxer

MAX_PACKET_MS = 120
#: samples (at 48 kHz) libopus's encoder looks ahead: the pre-skip an Ogg header states
PRE_SKIP_48K = 312
RATES = (8000, 12000, 16000, 24000, 48000)
APPLICATION_VOIP = 2048


@cache
def library() -> ModuleType:
    """``opuslib_next`` loaded once; :class:`CodecUnavailable` says what to install."""
    try:
        return importlib.import_module("opuslib_next")
    except ImportError:
        raise CodecUnavailable(
            "opus needs the Python package opuslib-next (rerun scripts/install, or "
            "pip install 'opuslib-next')"
        ) from None
    except Exception:  # opuslib raises a bare Exception when libopus is missing
        raise CodecUnavailable(
            "opus needs libopus (sudo apt install libopus0, or rerun scripts/install)"
        ) from None


class OpusPacketDecoder(CompressedDecoder):
    """Raw Opus packets (one per :meth:`feed`) → PCM16 mono at ``rate``; ``trim`` drops the
    encoder's look-ahead (:data:`PRE_SKIP_48K`)."""

    def __init__(self, rate: int, trim: bool = True) -> None:
        if rate not in RATES:
            raise ValueError(f"Opus decodes at {RATES} Hz, not {rate}")
        super().__init__(rate, PRE_SKIP_48K * rate // 48000 if trim else 0)
        self._opus = library()
        self._dec: Any = self._opus.Decoder(rate, 1)
        self._max = rate * MAX_PACKET_MS // 1000
        self._last = rate // 50  # 20 ms until a packet says otherwise
        self.concealed = 0  # packets replaced by concealment (counted for the status)

    def _restart(self) -> None:
        self._dec.reset_state()
        self._last = self.rate // 50

    def _decode(self, packet: bytes) -> bytes:
        if not packet:
            return b""
        try:
            n = self._opus.api.decoder.get_nb_samples(self._dec.decoder_state, packet, len(packet))
            if not 0 < n <= self._max:
                raise ValueError(f"packet of {n} samples")
            pcm: bytes = self._dec.decode(packet, self._max)
            self._last = n
        except Exception:  # OpusError, a bad TOC: conceal, keep the time
            self.concealed += 1
            pcm = self._dec.decode(b"", self._last)
        return pcm


class OggOpusDecoder:
    """Ogg-wrapped Opus (bytes cut anywhere) → PCM16 mono at ``rate``; honours pre-skip."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._packets = OpusPacketDecoder(rate, trim=False)
        self._ogg = OggDemuxer()
        self._headers = 0

    def reset(self) -> None:
        self._packets.reset()
        self._ogg.reset()
        self._headers = 0

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for packet in self._ogg.feed(data):
            if self._headers < 2 and packet.startswith((b"OpusHead", b"OpusTags")):
                if packet.startswith(b"OpusHead") and len(packet) >= 12:
                    pre_skip = struct.unpack_from("<H", packet, 10)[0]
                    self._packets.skip(pre_skip * self.rate // 48000)
                self._headers += 1
                continue
            out.append(self._packets.feed(packet))
        return b"".join(out)

    def flush(self) -> bytes:
        return b""


class OpusEncoder:
    """PCM16 mono at ``rate`` → Opus packets of ``frame_ms`` each (VOIP application)."""

    def __init__(
        self, rate: int = 16000, frame_ms: int = 60, bitrate: int = 24000, complexity: int = 5
    ) -> None:
        if rate not in RATES:
            raise ValueError(f"Opus encodes at {RATES} Hz, not {rate}")
        self.rate, self.frame_ms = rate, frame_ms
        opus = library()
        self._enc: Any = opus.Encoder(rate, 1, APPLICATION_VOIP)
        self._enc.bitrate = bitrate
        self._enc.complexity = complexity
        self._size = rate * frame_ms // 1000 * 2
        self._buf = b""

    def encode(self, pcm: bytes) -> list[bytes]:
        """Every whole packet the PCM so far makes; the remainder waits for more."""
        buf = self._buf + pcm
        n = len(buf) // self._size
        packets = [
            self._enc.encode(buf[i * self._size : (i + 1) * self._size], self._size // 2)
            for i in range(n)
        ]
        self._buf = buf[n * self._size :]
        return packets

    def flush(self) -> list[bytes]:
        """The remainder as one last packet, padded with silence (end of a turn)."""
        if not self._buf:
            return []
        tail = self._buf + bytes(self._size - len(self._buf))
        self._buf = b""
        return [self._enc.encode(tail, self._size // 2)]

    def reset(self) -> None:
        self._enc.reset_state()
        self._buf = b""
