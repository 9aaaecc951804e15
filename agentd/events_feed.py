"""The event stream for other programs: `subscribe` on the control socket, `agentd ctl watch`.

Each subscriber gets JSON lines (``{"event": "state", "state": "listening", "t": …}``) from its
own bounded queue. Publishing never waits: a reader that falls :data:`QUEUE_MAX` events
behind is told ``{"event": "dropped"}`` and disconnected, so a stuck program can never slow the
daemon down or grow its memory. Lines are redacted like the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from agentd import logs

log = logging.getLogger("agentd.events")

QUEUE_MAX = 256  # events a subscriber may fall behind before it is dropped
WRITE_TIMEOUT_S = 5.0  # a subscriber whose socket takes nothing this long is dropped


class _Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.dropped = False


class EventsFeed:
    def __init__(self, queue_max: int = QUEUE_MAX) -> None:
        self.queue_max = queue_max
        self._subs: set[_Subscriber] = set()
        self.dropped = 0  # subscribers dropped for falling behind

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, kind: str, **fields: Any) -> None:
        """Queue one event for every subscriber; never blocks, never raises for a reader."""
        if not self._subs:
            return
        event = {"event": kind, "t": round(time.time(), 3), **fields}
        for sub in list(self._subs):
            if sub.queue.qsize() >= self.queue_max:
                self._drop(sub, f"more than {self.queue_max} events behind")
            else:
                sub.queue.put_nowait(event)

    def _drop(self, sub: _Subscriber, why: str) -> None:
        self._subs.discard(sub)
        sub.dropped = True
        self.dropped += 1
        log.warning("event subscriber dropped: %s", why)
        sub.queue.put_nowait({"event": "dropped", "reason": why})
        sub.queue.put_nowait(None)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Stream events to one client until it hangs up or falls behind."""
        sub = _Subscriber()
        self._subs.add(sub)
        hangup = asyncio.ensure_future(_until_eof(reader))
        try:
            await _send(writer, {"ok": True, "subscribed": True, "queue_max": self.queue_max})
            while True:
                get = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait({get, hangup}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    return
                event = get.result()
                if event is None:
                    return
                try:
                    await asyncio.wait_for(_send(writer, event), WRITE_TIMEOUT_S)
                except TimeoutError:
                    if not sub.dropped:
                        self._subs.discard(sub)
                        self.dropped += 1
                        log.warning("event subscriber dropped: its socket took nothing")
                    return
        except ConnectionError:
            return
        finally:
            self._subs.discard(sub)
            hangup.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await hangup


async def _until_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(4096):
            pass


async def _send(writer: asyncio.StreamWriter, event: dict[str, Any]) -> None:
    writer.write((json.dumps(logs.redact_obj(event)) + "\n").encode())
    await writer.drain()
