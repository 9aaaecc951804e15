"""Ogg pages → the packets they carry (RFC 3533), for Ogg-wrapped Opus; pure, no I/O.

Bytes may arrive cut anywhere: a partial page waits for the rest, and a packet continued
over pages (lacing value 255 at a page's end) is joined, so the packets are the same however
the stream is cut. A damaged page (bad capture pattern) is skipped by resyncing on ``OggS``.
"""

from __future__ import annotations

import struct

CAPTURE = b"OggS"
_HEADER = 27
MAX_BUFFER = 1 << 20  # a page is at most 65 307 bytes: more unparsed bytes is garbage


class OggDemuxer:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._buf = bytearray()
        self._partial = bytearray()  # a packet continued on the next page

    def feed(self, data: bytes) -> list[bytes]:
        """The packets completed by these bytes, in order."""
        self._buf += data
        packets: list[bytes] = []
        while True:
            start = self._buf.find(CAPTURE)
            if start < 0:
                del self._buf[: max(0, len(self._buf) - 3)]
                break
            if start:
                del self._buf[:start]
            if len(self._buf) < _HEADER:
                break
            nseg = self._buf[26]
            if len(self._buf) < _HEADER + nseg:
                break
            lacing = self._buf[_HEADER : _HEADER + nseg]
            end = _HEADER + nseg + sum(lacing)
            if len(self._buf) < end:
                break
            pos = _HEADER + nseg
            for lace in lacing:
                self._partial += self._buf[pos : pos + lace]
                pos += lace
                if lace < 255:
                    packets.append(bytes(self._partial))
                    self._partial.clear()
            del self._buf[:end]
        if len(self._buf) > MAX_BUFFER:
            self._buf.clear()
        return packets


def page(packets: list[bytes], serial: int, seq: int, granule: int, first: bool = False) -> bytes:
    """One Ogg page holding whole ``packets`` (each < 255 × 255 bytes); for the simulator and
    tests, which need to send what an Ogg muxer sends."""
    lacing = bytearray()
    for p in packets:
        lacing += b"\xff" * (len(p) // 255) + bytes([len(p) % 255])
    header = CAPTURE + struct.pack(
        "<BBqIIIB", 0, 2 if first else 0, granule, serial, seq, 0, len(lacing)
    )
    raw = bytearray(header + lacing + b"".join(packets))
    struct.pack_into("<I", raw, 22, _crc(bytes(raw)))
    return bytes(raw)


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def _crc(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) & 0xFF) ^ b]
    return crc
