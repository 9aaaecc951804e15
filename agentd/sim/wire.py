"""The simulator's wire formats: what a session asked for, the answer audio as each format's
deltas, and the client's appended audio decoded back to PCM.

Sim-only (the MP3 encoder is LAME, which the device never needs). Switches on
:class:`WireStyle` model what servers do that the spec leaves open: MP3 deltas of whole
frames or cut anywhere, raw Opus packets of 20 or 60 ms, or Opus in Ogg pages.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Any

from agentd.audio import codecs
from agentd.audio.codecs import ogg
from agentd.audio.codecs.opus import PRE_SKIP_48K
from agentd.realtime.dialects import WIRE_RATES, XSTAR_FORMAT_RATES, XSTAR_WIRE
from agentd.sim.mp3enc import ENCODER_DELAY, Mp3Encoder

DELTA_MS = 100
_GA = {"audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
_BETA = {"g711_ulaw": "g711_ulaw", "g711_alaw": "g711_alaw"}


@dataclass
class WireStyle:
    """How the simulator cuts compressed answers (a test flips these)."""

    mp3_cuts: str = "frames"  # frames: whole frames per delta | random: 1..700-byte cuts
    opus_frame_ms: int = 20  # raw Opus packet duration: 20 | 60
    opus_ogg: bool = False  # Opus in Ogg pages instead of raw packets
    seed: int = 1


def formats(dialect: str, session: dict[str, Any]) -> tuple[tuple[str, int], tuple[str, int]]:
    """((input format, rate), (output format, rate)) named by a session.update."""

    def ga(fmt: Any) -> tuple[str, int]:
        fmt = fmt if isinstance(fmt, dict) else {}
        kind = _GA.get(str(fmt.get("type", "audio/pcm")), "pcm")
        return (kind, WIRE_RATES[kind]) if kind != "pcm" else ("pcm", int(fmt.get("rate", 24000)))

    def flat(name: Any) -> tuple[str, int]:
        name = str(name or "")
        kind = XSTAR_WIRE.get(name) or _BETA.get(name)
        if kind is not None:
            return kind, WIRE_RATES[kind]
        return "pcm", XSTAR_FORMAT_RATES.get(name, 24000)

    if dialect == "openai":
        audio = session.get("audio") or {}
        return (
            ga((audio.get("input") or {}).get("format")),
            ga((audio.get("output") or {}).get("format")),
        )
    return flat(session.get("input_audio_format")), flat(session.get("output_audio_format"))


def stream_lead_ms(fmt: str, rate: int) -> float:
    """How much of an answer's stream, as a client decodes it, comes before the answer's
    first sample: LAME's delay in MP3 (no tag names it, so the client keeps it; the server
    knows its own encoder and takes it off a truncate's ``audio_end_ms``), none in the other
    formats (the client cuts what the format names: Ogg's pre-skip, Opus's look-ahead)."""
    return ENCODER_DELAY * 1000 / rate if fmt == "mp3" else 0.0


def deltas(pcm: bytes, fmt: str, rate: int, style: WireStyle) -> list[tuple[bytes, float]]:
    """An answer's PCM16 → its audio deltas, each with the milliseconds of audio it carries."""
    if fmt == "mp3":
        return _mp3(pcm, rate, style)
    if fmt == "opus":
        return _opus(pcm, rate, style)
    enc = codecs.encoder(fmt, rate)
    per = rate * DELTA_MS // 1000 * 2
    out = []
    for i in range(0, len(pcm), per):
        chunk = pcm[i : i + per]
        out.append((b"".join(enc.encode(chunk)), len(chunk) / 2 * 1000 / rate))
    return out


def _mp3(pcm: bytes, rate: int, style: WireStyle) -> list[tuple[bytes, float]]:
    enc = Mp3Encoder(rate)
    stream = enc.encode(pcm) + enc.flush()
    enc.close()
    mpeg1 = rate >= 32000  # MPEG-1: 1152 samples a frame; MPEG-2 (xStar's 24 kHz): 576
    frame = (144 if mpeg1 else 72) * 48000 // rate  # bytes at 48 kbit/s CBR
    # a delta carries the audio its frames decode to (the encoder's delay and end padding
    # included): what a client can play, so what a truncate may claim
    ms_per_byte = (1152 if mpeg1 else 576) * 1000 / rate / frame
    if style.mp3_cuts == "random":
        rng = random.Random(style.seed)
        cuts, i = [], 0
        while i < len(stream):
            n = rng.randint(1, 700)
            cuts.append(stream[i : i + n])
            i += n
    else:  # whole frames, about DELTA_MS of them per delta (CBR: equal frames)
        per = max(1, round(DELTA_MS / ((1152 if mpeg1 else 576) * 1000 / rate)))
        cuts = [stream[i : i + frame * per] for i in range(0, len(stream), frame * per)]
    return [(c, len(c) * ms_per_byte) for c in cuts]


def _opus(pcm: bytes, rate: int, style: WireStyle) -> list[tuple[bytes, float]]:
    ms = style.opus_frame_ms
    enc = codecs.encoder("opus", rate, frame_ms=ms)
    packets = enc.encode(pcm) + enc.flush()
    if not style.opus_ogg:
        return [(p, float(ms)) for p in packets]
    serial = 0x51A
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, PRE_SKIP_48K, rate, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 3) + b"sim" + struct.pack("<I", 0)
    out = [(ogg.page([head], serial, 0, 0, first=True) + ogg.page([tags], serial, 1, 0), 0.0)]
    per = max(1, DELTA_MS // ms)
    granule = 0
    for n, i in enumerate(range(0, len(packets), per)):
        group = packets[i : i + per]
        granule += len(group) * ms * 48
        out.append((ogg.page(group, serial, 2 + n, granule), float(len(group) * ms)))
    return out


class InputDecoder:
    """The client's appends → PCM16 at the input rate (one Opus packet per append)."""

    def __init__(self, fmt: str, rate: int) -> None:
        self.format, self.rate = fmt, rate
        self._dec = codecs.decoder(fmt, rate)
        self.packets = 0

    def feed(self, payload: bytes) -> bytes:
        self.packets += 1
        return self._dec.feed(payload)
