"""G.711 µ-law and A-law (8 kHz, one byte per sample) by lookup tables.

The tables are built once from the algorithm CPython's ``audioop`` used (Sun's g711.c:
``lin2ulaw`` on the top 14 bits, ``lin2alaw`` on the top 13), so the bytes are identical to
what ``audioop`` produced before Python 3.13 removed it; encode and decode are one numpy
indexing each, stateless, so any cut of the stream decodes the same.
"""

from __future__ import annotations

import numpy as np

RATE = 8000
_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _search(val: int, table: tuple[int, ...]) -> int:
    for i, end in enumerate(table):
        if val <= end:
            return i
    return len(table)


def _lin2ulaw(sample: int) -> int:
    val = sample >> 2
    mask = 0xFF
    if val < 0:
        val, mask = -val, 0x7F
    val = min(val, 8159) + (0x84 >> 2)
    seg = _search(val, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((val >> (seg + 1)) & 0xF)) ^ mask


def _lin2alaw(sample: int) -> int:
    val = sample >> 3
    mask = 0xD5
    if val < 0:
        val, mask = -val - 1, 0x55
    seg = _search(val, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (val >> 1 if seg < 2 else val >> seg) & 0xF
    return aval ^ mask


def _ulaw2lin(code: int) -> int:
    u = ~code & 0xFF
    t = (((u & 0xF) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def _alaw2lin(code: int) -> int:
    a = code ^ 0x55
    t = (a & 0xF) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def _tables(
    encode: object, decode: object
) -> tuple[np.ndarray, np.ndarray]:  # (int16 as uint16 → code, code → int16)
    samples = np.arange(65536, dtype=np.uint16).view(np.int16)
    enc = np.array([encode(int(s)) for s in samples], dtype=np.uint8)  # type: ignore[operator]
    dec = np.array([decode(c) for c in range(256)], dtype="<i2")  # type: ignore[operator]
    return enc, dec


_TABLES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def tables(law: str) -> tuple[np.ndarray, np.ndarray]:
    """(encode table indexed by the sample's uint16 bits, decode table of 256 int16)."""
    if law not in _TABLES:
        _TABLES[law] = (
            _tables(_lin2ulaw, _ulaw2lin) if law == "ulaw" else _tables(_lin2alaw, _alaw2lin)
        )
    return _TABLES[law]


class G711Decoder:
    """G.711 bytes → PCM16 at 8 kHz: one sample per byte, no state."""

    rate = RATE

    def __init__(self, law: str) -> None:
        self._dec = tables(law)[1]

    def feed(self, data: bytes) -> bytes:
        return self._dec[np.frombuffer(data, dtype=np.uint8)].tobytes()

    def flush(self) -> bytes:
        return b""

    def reset(self) -> None:
        """Nothing to forget: every byte is a whole sample."""


class G711Encoder:
    """PCM16 at 8 kHz → G.711 bytes (one packet per call, the size of the input)."""

    rate = RATE

    def __init__(self, law: str) -> None:
        self._enc = tables(law)[0]

    def encode(self, pcm: bytes) -> list[bytes]:
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").view(np.uint16)
        return [self._enc[samples].tobytes()] if len(samples) else []

    def flush(self) -> list[bytes]:
        return []

    def reset(self) -> None:
        """Nothing to forget."""
