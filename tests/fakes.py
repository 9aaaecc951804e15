"""In-memory stand-ins for the daemon's adapters, passed through ``Hooks.make_*``.

They take the real adapters' constructor arguments, so the daemon builds them exactly as it
builds the real ones; what they do instead of I/O is driven by the test: frames pushed into
the microphone, a speaker clock advanced by hand, server events injected into the link.
Tests that measure what a user hears or says keep the real rigs (tests/rigs.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentd.audio.alsa import AudioStats
from agentd.audio.frame import AudioFrame
from agentd.config import Config, InputSettings, OutputSettings
from agentd.realtime import client_events as ce
from agentd.realtime.client_events import SessionSettings
from agentd.realtime.connection import LinkState
from agentd.realtime.events import ServerEvent


class ManualClock:
    """Time that passes only when the test says so."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class _FakeDevice:
    kind = "capture"

    def __init__(self, device: str) -> None:
        self.device = device
        self.stats = AudioStats()
        self.error: str | None = None
        self.opened = threading.Event()
        self.first_attempt = threading.Event()
        self.running = False

    def start(self) -> None:
        self.running = True
        self.opened.set()
        self.first_attempt.set()

    async def aclose(self, timeout: float = 1.0) -> None:
        self.running = False
        self.opened.clear()

    def problem(self, now: float | None = None) -> str | None:
        return None


class FakeCapture(_FakeDevice):
    """A microphone the test speaks into with :meth:`push` (on the loop, like the real one)."""

    def __init__(
        self,
        settings: InputSettings,
        loop: asyncio.AbstractEventLoop,
        on_frame: Callable[[AudioFrame], None],
        on_status: Callable[[str | None], None] | None = None,
    ) -> None:
        super().__init__(settings.device)
        self.settings = settings
        self.on_frame = on_frame
        self.gathering = 1  # what the daemon last asked Capture.gather for

    def gather(self, frames: int) -> None:
        self.gathering = frames

    def wedged(self, now: float | None = None) -> str | None:
        return None  # no driver to be stuck in

    def push(self, frame: AudioFrame) -> None:
        """Deliver one frame the way the capture thread does: errors are counted, not raised."""
        assert self.running, "the daemon has not started (or has closed) the microphone"
        try:
            self.on_frame(frame)
        except Exception:
            self.stats.frame_errors += 1


@dataclass
class _Chunk:
    item: str | None
    start: float  # seconds on the fake clock
    end: float


class FakePlayback(_FakeDevice):
    """A speaker on ``clock`` (by default a :class:`ManualClock` the test advances with
    :meth:`advance`): audio queued by :meth:`play` plays back to back from when it is
    queued; a flush drops the rest. The daemon's ``now`` arguments are ignored: this clock
    is the only one."""

    kind = "playback"
    POLL_S = 0.004
    stopping = False  # (a flush stops it at once)

    def __init__(
        self,
        settings: OutputSettings,
        source_rate: int,
        on_status: Callable[[str | None], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(settings.device)
        self.settings = settings
        self.source_rate = source_rate
        self.clock: Callable[[], float] = clock or ManualClock()
        self.chunks: list[_Chunk] = []
        self.gains: list[float | None] = []  # the gain of each play() call
        self.flushes = 0
        self.warms = 0

    @property
    def t(self) -> float:
        return self.clock()

    def advance(self, seconds: float) -> None:
        assert isinstance(self.clock, ManualClock), "this speaker runs on a real clock"
        self.clock.advance(seconds)

    def play(
        self,
        pcm: bytes,
        item: str | None = None,
        rate: int | None = None,
        gain: float | None = None,
        last: bool = False,
    ) -> None:
        start = self.queued_until()
        dur = len(pcm) / 2 / (rate or self.source_rate)
        self.chunks.append(_Chunk(item, start, start + dur))
        self.gains.append(gain)

    def warm(self) -> None:
        """Playback.warm: a turn began or ended (a parked speaker would reopen)."""
        self.warms += 1

    def flush(self) -> None:
        self.flushes += 1
        self.chunks = [
            _Chunk(c.item, c.start, min(c.end, self.t)) for c in self.chunks if c.start < self.t
        ]

    def queued_until(self, now: float | None = None) -> float:
        return max([self.t, *(c.end for c in self.chunks)])

    def busy(self, now: float | None = None) -> bool:
        return self.queued_until() > self.t

    @property
    def last_played_at(self) -> float:
        return self.queued_until()

    def heard_ms(self, item: str, now: float | None = None) -> int:
        s = sum(max(0.0, min(self.t, c.end) - c.start) for c in self.chunks if c.item == item)
        return int(s * 1000)

    def played_ms(self, item: str | None) -> int:
        """Everything queued for ``item`` (played or still to play), in ms."""
        return int(sum(c.end - c.start for c in self.chunks if c.item == item) * 1000)


@dataclass
class FakeLink:
    """A connection that records the client events the daemon sends and lets the test inject
    server events (:meth:`inject`) and connection changes (:meth:`connect`, :meth:`drop`)."""

    cfg: Config
    api_key: str | None
    on_event: Callable[[ServerEvent], None]
    on_state: Callable[[LinkState], None]
    sent: list[ce.ClientEvent] = field(default_factory=list)
    connected: bool = False
    last_error: str | None = None
    reconnects: int = 0
    protocol_errors: int = 0
    handler_errors: int = 0
    first_connect_done: bool = False
    renewals: int = 0

    def __post_init__(self) -> None:
        self.session = SessionSettings.of(self.cfg.api, self.cfg.agent, self.cfg.turn)
        self._closed = asyncio.Event()

    # -- what the daemon calls
    def send(self, event: ce.ClientEvent) -> bool:
        if not self.connected:
            return False
        self.sent.append(event)
        return True

    async def run(self) -> None:
        self.connect()
        await self._closed.wait()

    async def close(self) -> None:
        self.connected = False
        self._closed.set()

    def configure(self, cfg: Config, api_key: str | None) -> bool:
        self.cfg, self.api_key = cfg, api_key
        return False

    def update_session(self) -> None:
        self.send(ce.SessionUpdate(self.session))

    def set_tools(self, tools: tuple[dict[str, Any], ...]) -> bool:
        old, self.session = self.session, dataclasses.replace(self.session, tools=tools)
        return old != self.session

    def renew_due(self) -> bool:
        return False

    def reconnect(self, renewing: bool = False) -> None:
        """Drop and reopen at once, as a prompt real reconnect would."""
        self.reconnects += 1
        self.renewals += renewing
        self.drop("reconnecting")
        self.connect()

    def on_schedule(self, now: float | None = None) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"FakeLink has no {name!r}: add it when the daemon needs it")

    # -- what the test drives
    def connect(self) -> None:
        self.connected, self.first_connect_done, self.last_error = True, True, None
        self.on_state(LinkState(True))

    def drop(self, error: str = "connection closed") -> None:
        self.connected, self.last_error = False, error
        self.on_state(LinkState(False, error))

    def inject(self, *events: ServerEvent) -> None:
        for e in events:
            self.on_event(e)

    def sent_of(self, kind: type[ce.ClientEvent]) -> list[ce.ClientEvent]:
        return [e for e in self.sent if isinstance(e, kind)]
