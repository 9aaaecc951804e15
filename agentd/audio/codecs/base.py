"""What the compressed decoders share: the missing-library error and the feed/flush/reset
skeleton around a library decoder (libmpg123, libopus)."""

from __future__ import annotations


class CodecUnavailable(RuntimeError):
    """A shared library a wire format needs is not installed (says which apt package)."""


class CompressedDecoder:
    """One compressed stream → PCM16 mono at ``rate``.

    A subclass decodes (:meth:`_decode`: the PCM of every frame or packet the bytes complete)
    and restarts its library decoder (:meth:`_restart`); this drops the codec's delay at the
    stream's start (``lead`` samples; each codec says which delay it knows), so what the
    user heard is counted from the stream's start. Nothing is held back at the end: the
    libraries give every complete frame at once, so :meth:`flush` has nothing to add."""

    def __init__(self, rate: int, lead: int) -> None:
        self.rate = rate
        self.lead = lead
        self._skip = lead * 2  # bytes still to drop at the start of this stream

    def _decode(self, data: bytes) -> bytes:
        raise NotImplementedError

    def _restart(self) -> None:
        raise NotImplementedError

    def skip(self, samples: int) -> None:
        """Drop ``samples`` at the start instead of ``lead`` (a header says so: Ogg's
        pre-skip)."""
        self._skip = samples * 2

    def feed(self, data: bytes) -> bytes:
        """The next bytes (or packet) of the stream → the PCM of what is now complete."""
        pcm = self._decode(data)
        if self._skip and pcm:
            cut = min(self._skip, len(pcm))
            self._skip -= cut
            pcm = pcm[cut:]
        return pcm

    def flush(self) -> bytes:
        return b""

    def reset(self) -> None:
        """A new stream (response, cancel, truncate, reconnect): no state, no buffer."""
        self._restart()
        self._skip = self.lead * 2
