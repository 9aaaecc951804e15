"""MP3 decoding: a small ctypes binding to Debian's libmpg123 in feed mode.

One decoder per response, fed every delta in order: MP3's bit reservoir lets a frame borrow
bits from the frames before it, so decoding each delta on its own garbles the audio. Feed mode
buffers partial frames inside mpg123, so the output is the same however the stream is cut.
The output format is forced to mono int16 at the session's rate (mpg123 mixes stereo down and
converts another rate itself).

Delay: a Layer III decoder's first 529 samples (mpg123's ``MPG123_DEC_DELAY``) are the
synthesis filterbank warming up, the same for every stream, so they are dropped. The
encoder's delay (576 samples for LAME; other encoders differ) is only known from a LAME/Info
tag: with one, mpg123's gapless mode cuts the encoder's delay, the decoder's and the end
padding itself (measured: the output is the source, sample for sample); without one (xStar's
headerless frames) it stays in the stream as the server sent it, and what the user hears is
counted from there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

from agentd.audio.codecs.base import CodecUnavailable, CompressedDecoder

_OK, _NEED_MORE, _NEW_FORMAT, _DONE = 0, -10, -11, -12
_MONO = 1
_ENC_SIGNED_16 = 0xD0
_ADD_FLAGS = 2  # enum mpg123_parms: MPG123_VERBOSE, MPG123_FLAGS, MPG123_ADD_FLAGS
_FLAG_MONO_MIX = 0x4  # MPG123_MONO_MIX
_FLAG_QUIET = 0x20
_FLAG_NO_READAHEAD = 0x400000  # MPG123_NO_READAHEAD (libmpg123 >= 1.26)
_REMOVE_FLAGS = 13
_FLAG_GAPLESS = 0x40  # MPG123_GAPLESS (on by default): cut what a LAME/Info tag names
_ENC_DELAY, _DEC_DELAY = 5, 7  # enum mpg123_state: the tag's encoder delay, the decoder's
_OUT_CHUNK = 1 << 16
SONAME = "libmpg123.so.0"


@cache
def library() -> ctypes.CDLL:
    """libmpg123, loaded once; :class:`CodecUnavailable` names the package when missing."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("mpg123") or SONAME)
    except OSError:
        raise CodecUnavailable(
            "mp3 needs libmpg123 (sudo apt install libmpg123-0, libmpg123-0t64 on Debian 13; or "
            "rerun scripts/install)"
        ) from None
    vp, c_int, c_long, c_size = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_size_t
    lib.mpg123_init.restype = c_int
    lib.mpg123_new.argtypes = [ctypes.c_char_p, ctypes.POINTER(c_int)]
    lib.mpg123_new.restype = vp
    lib.mpg123_delete.argtypes = [vp]
    lib.mpg123_param.argtypes = [vp, c_int, c_long, ctypes.c_double]
    lib.mpg123_format_none.argtypes = [vp]
    lib.mpg123_format.argtypes = [vp, c_long, c_int, c_int]
    lib.mpg123_open_feed.argtypes = [vp]
    lib.mpg123_close.argtypes = [vp]
    lib.mpg123_decode.argtypes = [vp, ctypes.c_char_p, c_size, ctypes.c_char_p, c_size, vp]
    lib.mpg123_decode.restype = c_int
    lib.mpg123_getstate.argtypes = [vp, c_int, ctypes.POINTER(c_long), vp]
    lib.mpg123_getstate.restype = c_int
    lib.mpg123_init()  # a no-op since 1.27, needed before
    return lib


def is_frame_header(b: bytes) -> bool:
    """A plausible MPEG audio Layer III frame header (not free format) at the start of ``b``."""
    if len(b) < 4 or b[0] != 0xFF or b[1] & 0xE0 != 0xE0:
        return False
    version, layer = (b[1] >> 3) & 3, (b[1] >> 1) & 3
    bitrate, srate = b[2] >> 4, (b[2] >> 2) & 3
    return version != 1 and layer == 1 and bitrate not in (0, 15) and srate != 3


class Mp3Decoder(CompressedDecoder):
    """MPEG audio (headerless Layer III frames, or with an ID3 tag) → PCM16 mono at ``rate``;
    ``trim`` drops the decoder's delay, and the encoder's when a LAME/Info tag names it
    (``trim=False``: every sample the synthesis gives, gapless mode off).

    mpg123 confirms a stream's first header by reading the next one before it decodes the
    first frame (its read-ahead): fed one frame per delta, the first frame would wait for
    the second. A stream that opens on a frame header (xStar's headerless frames) is taken
    as frames and decoded from its first one; anything else (ID3, junk) keeps the check."""

    def __init__(self, rate: int, trim: bool = True) -> None:
        super().__init__(rate, 0)  # the lead is known once the first frame is parsed
        self.trim = trim
        self._lib = library()
        self._buf = ctypes.create_string_buffer(_OUT_CHUNK)
        self._done = ctypes.c_size_t()
        self._mh: int | None = None
        self._open()

    def _open(self) -> None:
        lib = self._lib
        err = ctypes.c_int()
        mh = lib.mpg123_new(None, ctypes.byref(err))
        if not mh:
            raise CodecUnavailable(f"mpg123_new failed ({err.value})")
        lib.mpg123_param(mh, _ADD_FLAGS, _FLAG_MONO_MIX | _FLAG_QUIET, 0.0)
        if not self.trim:
            lib.mpg123_param(mh, _REMOVE_FLAGS, _FLAG_GAPLESS, 0.0)
        lib.mpg123_format_none(mh)
        lib.mpg123_format(mh, self.rate, _MONO, _ENC_SIGNED_16)
        lib.mpg123_open_feed(mh)
        self._mh = mh
        self._head: bytes | None = b""  # the stream's first bytes, until 4 say what it opens on
        self._lead_known = not self.trim
        self.lead = 0

    def _close(self) -> None:
        if self._mh is not None:
            self._lib.mpg123_close(self._mh)
            self._lib.mpg123_delete(self._mh)
            self._mh = None

    def __del__(self) -> None:
        self._close()

    def _decode(self, data: bytes) -> bytes:
        if self._head is not None:
            data = self._head + data
            if len(data) < 4:
                self._head = data
                return b""
            self._head = None
            if is_frame_header(data):
                self._lib.mpg123_param(self._mh, _ADD_FLAGS, _FLAG_NO_READAHEAD, 0.0)
        out: list[bytes] = []
        inp: bytes | None = data
        while True:
            n = len(inp) if inp else 0
            rc = self._lib.mpg123_decode(
                self._mh, inp, n, self._buf, _OUT_CHUNK, ctypes.byref(self._done)
            )
            inp = None
            if self._done.value:
                out.append(self._buf.raw[: self._done.value])
            if rc in (_NEED_MORE, _DONE) or (rc < 0 and rc != _NEW_FORMAT):
                break  # a broken frame is skipped: mpg123 resyncs on the next header
        if out and not self._lead_known:
            self._lead_known = True
            self.lead = self._lead()
            self.skip(self.lead)  # before feed() trims this first output
        return b"".join(out)

    def _state(self, key: int) -> int:
        val = ctypes.c_long(-1)
        self._lib.mpg123_getstate(self._mh, key, ctypes.byref(val), None)
        return val.value

    def _lead(self) -> int:
        """Samples to drop at this stream's start: the decoder's delay when no tag names the
        encoder's (with a tag, gapless mode has cut both already)."""
        if self._state(_ENC_DELAY) >= 0:
            return 0
        return max(0, self._state(_DEC_DELAY))

    def _restart(self) -> None:
        self._close()
        self._open()
