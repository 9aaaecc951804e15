"""An MP3 encoder for the simulator only: libmp3lame through ctypes.

The device never encodes MP3 (xStar only sends it); the simulator needs the real thing to
send what xStar sends: headerless MPEG-2 Layer III, 48 kbit/s CBR, mono, no Xing/LAME tag.
With ``tag=True`` (tests of a server that sends one) LAME writes its Info tag, which names
its encoder delay and padding; at 24 kHz LAME writes it only at 80 kbit/s or more (its
frame is too small below), so xStar's 48 kbit/s stream could not carry one from LAME.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

_MONO = 3
#: samples LAME delays the audio by (its encoder delay; the decoder's 529 come on top): the
#: first sample of the answer is sample 576 of what an MP3 decoder gives once its own delay
#: is cut
ENCODER_DELAY = 576


@cache
def library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("mp3lame") or "libmp3lame.so.0")
    except OSError:
        raise RuntimeError(
            "the simulator's MP3 output needs libmp3lame (sudo apt install libmp3lame0)"
        ) from None
    vp = ctypes.c_void_p
    lib.lame_init.restype = vp
    for name in (
        "lame_set_num_channels",
        "lame_set_in_samplerate",
        "lame_set_out_samplerate",
        "lame_set_brate",
        "lame_set_mode",
        "lame_set_VBR",
        "lame_set_bWriteVbrTag",
        "lame_set_quality",
    ):
        getattr(lib, name).argtypes = [vp, ctypes.c_int]
    lib.lame_get_lametag_frame.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
    lib.lame_get_lametag_frame.restype = ctypes.c_size_t
    lib.lame_init_params.argtypes = [vp]
    lib.lame_encode_buffer.argtypes = [vp, vp, vp, ctypes.c_int, vp, ctypes.c_int]
    lib.lame_encode_flush.argtypes = [vp, vp, ctypes.c_int]
    lib.lame_close.argtypes = [vp]
    return lib


class Mp3Encoder:
    """PCM16 mono → MP3 bytes (whole frames as LAME finishes them)."""

    def __init__(self, rate: int = 24000, kbps: int = 48, tag: bool = False) -> None:
        self.rate = rate
        self._lib = lib = library()
        self._gf = lib.lame_init()
        lib.lame_set_num_channels(self._gf, 1)
        lib.lame_set_in_samplerate(self._gf, rate)
        lib.lame_set_out_samplerate(self._gf, rate)
        lib.lame_set_mode(self._gf, _MONO)
        lib.lame_set_VBR(self._gf, 0)
        lib.lame_set_brate(self._gf, kbps)
        lib.lame_set_bWriteVbrTag(self._gf, int(tag))
        lib.lame_set_quality(self._gf, 5)
        if lib.lame_init_params(self._gf) < 0:
            raise ValueError(f"LAME refuses {rate} Hz at {kbps} kbit/s")

    def encode(self, pcm: bytes) -> bytes:
        n = len(pcm) // 2
        size = n * 5 // 4 + 7200
        buf = ctypes.create_string_buffer(size)
        src = ctypes.create_string_buffer(pcm[: n * 2], max(1, n * 2))
        got = self._lib.lame_encode_buffer(self._gf, src, None, n, buf, size)
        if got < 0:
            raise RuntimeError(f"lame_encode_buffer failed ({got})")
        return buf.raw[:got]

    def flush(self) -> bytes:
        buf = ctypes.create_string_buffer(7200)
        got = self._lib.lame_encode_flush(self._gf, buf, 7200)
        return buf.raw[: max(got, 0)]

    def lametag(self) -> bytes:
        """After :meth:`flush`: the Info tag frame that replaces the stream's first frame
        (a blank one LAME left for it); empty when LAME wrote none."""
        buf = ctypes.create_string_buffer(2880)
        n = self._lib.lame_get_lametag_frame(self._gf, buf, 2880)
        return buf.raw[:n]

    def close(self) -> None:
        if self._gf:
            self._lib.lame_close(self._gf)
            self._gf = None

    def __del__(self) -> None:
        self.close()
