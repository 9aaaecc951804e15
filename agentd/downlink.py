"""The downlink: one decoder per response, between the wire and the playback queue.

Pure (no sockets, no ALSA): the service hands in each audio delta as the server sent it and
gets PCM16 at the output rate, which the state machine and playback take as before. The
decoder is per response and per item: a new one (or a cancel, a truncate, a reconnect)
resets it, so MP3's bit reservoir or an Opus decoder's history never leak from one answer
into the next, and what playback counts as played is decoded samples, so ``audio_end_ms``
stays exact whatever the format.
"""

from __future__ import annotations

from agentd.audio import codecs


class Downlink:
    def __init__(self, fmt: str, rate: int) -> None:
        self.configure(fmt, rate)

    def configure(self, fmt: str, rate: int) -> None:
        """The session's output format and rate (a reload, the start)."""
        self.format, self.rate = fmt, rate
        self._dec = codecs.decoder(fmt, rate)
        self._stream: tuple[str | None, str] | None = None

    def reset(self) -> None:
        """The stream ended abruptly (cancel, truncate, link down): start clean."""
        self._dec.reset()
        self._stream = None

    def audio(self, response_id: str | None, item_id: str, data: bytes) -> bytes:
        """One delta of ``item_id`` → the PCM it completes (a new response restarts)."""
        if self._stream != (response_id, item_id):
            self._dec.reset()
            self._stream = (response_id, item_id)
        return self._dec.feed(data)

    def done(self, response_id: str | None, item_id: str) -> bytes:
        """The item's audio is complete: what the decoder still held, then a clean slate."""
        if self._stream != (response_id, item_id):
            return b""
        tail = self._dec.flush()
        self.reset()
        return tail

    @property
    def kind(self) -> str | None:
        """What the current response turned out to hold (ogg, mp3, opus …), once sniffed."""
        return self._dec.kind
