"""The WebSocket link to the realtime server: connect, authenticate, keep alive, reconnect.

A thin I/O shell around the pure codec and backoff: frames in become typed events handed to
``on_event``; typed client events are encoded and queued by :meth:`Link.send` (synchronous,
callable from the daemon's action runner) and written in order by one writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from agentd import logs
from agentd.config import Config, register_secrets
from agentd.realtime import client_events as ce
from agentd.realtime import dialects
from agentd.realtime.backoff import Backoff
from agentd.realtime.client_events import ClientEvent, SessionSettings
from agentd.realtime.codec import Codec, Endpoint, ProtocolError, codec_for, endpoint
from agentd.realtime.events import ServerEvent

log = logging.getLogger("agentd.realtime")

MAX_MESSAGE_BYTES = 16 * 2**20  # 16× websockets' 1 MiB default: big audio deltas, still bounded
PING_INTERVAL_S = 10.0
PING_TIMEOUT_S = 10.0  # a dead link without FIN is noticed within ~20 s
OPEN_TIMEOUT_S = 10.0
OUTBOX_LIMIT = 4000  # ~80 s of 20 ms appends; beyond that the oldest frames are dropped
BRIEF_SESSION_S = 5.0  # a session closed this soon the same way as before logs at debug
LOG_EVERY_S = 60.0  # at most one warning a minute for a flood of bad frames
SCHEDULE_GRACE_S = 5.0  # a link this late for its next connect attempt is stuck


class LinkError(Exception):
    """A failed connection attempt, in words a person can act on."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def auth(self) -> bool:
        return self.kind == "auth"


def describe_failure(exc: BaseException, url: str) -> LinkError:
    """Map handshake/network exceptions to one clear sentence (never containing the key)."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'wss' else 80)}"
    if isinstance(exc, InvalidStatus):
        code = exc.response.status_code
        if code in (401, 403):
            return LinkError(
                "auth", f"API key rejected by {parts.hostname} (HTTP {code}): check the key"
            )
        if code == 404:
            return LinkError("not_found", f"HTTP 404 from {where}: wrong api.url or api.model")
        if code == 429:
            return LinkError("rate_limited", f"rate limited or out of quota (HTTP 429) at {where}")
        return LinkError("http", f"server {where} refused the WebSocket (HTTP {code})")
    if isinstance(exc, InvalidURI):
        return LinkError("url", f"api.url is not a WebSocket URL: {parts.scheme}://{where}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return LinkError(
            "tls",
            f"TLS certificate of {parts.hostname} not accepted ({exc.verify_message}); "
            "is the system clock right?",
        )
    if isinstance(exc, ssl.SSLError):
        return LinkError("tls", f"TLS failed with {where}: {exc.reason}")
    if isinstance(exc, socket.gaierror):
        return LinkError("dns", f"cannot resolve {parts.hostname} (DNS): is the network up?")
    if isinstance(exc, ConnectionRefusedError):
        return LinkError("refused", f"connection refused by {where}")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return LinkError("timeout", f"no answer from {where} within {OPEN_TIMEOUT_S:.0f} s")
    if isinstance(exc, OSError):
        return LinkError("network", f"network error reaching {where}: {exc.strerror or exc}")
    if isinstance(exc, WebSocketException):
        return LinkError("protocol", f"WebSocket handshake with {where} failed: {exc}")
    return LinkError("other", f"cannot connect to {where}: {type(exc).__name__}")


@dataclass(frozen=True, slots=True)
class LinkState:
    connected: bool
    error: str | None = None
    renewing: bool = False
    kind: str | None = None  # LinkError.kind of a failed attempt (auth, rate_limited, …)


class Link:
    """Keeps one session open; survives every server fault by reconnecting with backoff."""

    def __init__(
        self,
        cfg: Config,
        api_key: str | None,
        on_event: Callable[[ServerEvent], None],
        on_state: Callable[[LinkState], None],
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[Link, float], Awaitable[None]] | None = None,
    ) -> None:
        self.on_event = on_event
        # how a backoff wait passes: a test drives a virtual clock through this seam
        self._wait = sleep or Link._retry_wait
        self.on_state = on_state
        self.clock = clock
        self._rng = rng
        self.ping_interval_s, self.ping_timeout_s = PING_INTERVAL_S, PING_TIMEOUT_S
        self.reconnects = 0
        self.attempts = 0
        self.protocol_errors = 0
        self.handler_errors = 0
        self._protocol_logged = self._handler_logged = float("-inf")
        self._last_close: str | None = None
        self.connected = False
        self.connected_at: float | None = None
        self.last_error: str | None = None
        self.first_connect_done = False
        self._ws: ClientConnection | None = None
        self._outbox: deque[str] = deque(maxlen=OUTBOX_LIMIT)
        self._wake_writer = asyncio.Event()
        self._wake_retry = asyncio.Event()
        self._closing = False
        self._renewing = False
        self._closer: asyncio.Future[None] | None = None
        # While not connected: when the link must next have done something (an attempt
        # finished or started); None while connected (pings watch a live session).
        self.due: float | None = None
        self.backoff = Backoff(cfg.reconnect.initial_s, cfg.reconnect.max_s, rng)
        self.tools: tuple[dict[str, Any], ...] = ()  # agentd.tools: what the session offers
        self.configure(cfg, api_key)

    def configure(self, cfg: Config, api_key: str | None) -> bool:
        """Adopt a new config; returns True when the connection must be redone for it.

        What a reload does not change survives it: the codec (xStar's transcript state),
        and the backoff with its auth floor unless the key or the backoff settings changed.
        """
        old_cfg: Config | None = getattr(self, "cfg", None)
        old_ep: Endpoint | None = getattr(self, "_endpoint", None)
        old_key = getattr(self, "_api_key", None)
        self.cfg = cfg
        self._api_key = api_key
        self.session = SessionSettings.of(cfg.api, cfg.agent, cfg.turn, self.tools, cfg.audio.wire)
        self._endpoint = endpoint(cfg.api, cfg.device.user_id, api_key)
        if old_cfg is None or (old_cfg.api.dialect, old_cfg.device.user_id) != (
            cfg.api.dialect,
            cfg.device.user_id,
        ):
            self.codec: Codec = codec_for(cfg.api.dialect, cfg.device.user_id)
        if old_cfg is not None and old_cfg.reconnect != cfg.reconnect:
            auth_failures = self.backoff.auth_failures
            self.backoff = Backoff(cfg.reconnect.initial_s, cfg.reconnect.max_s, self._rng)
            self.backoff.auth_failures = auth_failures
        if old_key != api_key:
            self.backoff.auth_failures = 0  # a new key deserves a prompt try
        return old_ep is not None and old_ep != self._endpoint

    # ------------------------------------------------------------------ sending

    def send(self, event: ClientEvent) -> bool:
        """Encode a client event and queue its frame; False (nothing queued) while
        disconnected. The only way anything reaches the server."""
        if not self.connected:
            return False
        self._outbox.append(self.codec.encode(event))
        self._wake_writer.set()
        return True

    def update_session(self) -> None:
        self.send(ce.SessionUpdate(self.session))

    def set_tools(self, tools: tuple[dict[str, Any], ...]) -> bool:
        """What the session offers the model (agentd.tools); True when it changed (then
        the caller sends session.update; a new session carries it anyway)."""
        self.tools = tools
        old, self.session = self.session, dataclasses.replace(self.session, tools=tools)
        return old != self.session

    async def _writer(self, ws: ClientConnection) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            while self._outbox:
                await ws.send(self._outbox.popleft())

    # ------------------------------------------------------------------ lifecycle

    def on_schedule(self, now: float | None = None) -> bool:
        """Connected, or retrying on schedule: what the watchdog asks of the link."""
        now = self.clock() if now is None else now
        return self.due is None or now <= self.due

    def renew_due(self) -> bool:
        return (
            self.connected
            and self.connected_at is not None
            and self.clock() - self.connected_at >= self.cfg.api.session_max_s
        )

    def reconnect(self, renewing: bool = False) -> None:
        """Drop the current session and open a new one now (renewal, new url/key, 5 s hold)."""
        self._renewing = renewing
        self.backoff.attempt = 0
        self._wake_retry.set()
        if self._ws is not None:
            self._closer = asyncio.ensure_future(self._ws.close(1000, "renewing session"))

    async def close(self) -> None:
        self._closing = True
        self._wake_retry.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(1000, "agentd stopping"), 1.0)

    async def run(self) -> None:
        while not self._closing:
            self.attempts += 1
            self.due = self.clock() + OPEN_TIMEOUT_S + SCHEDULE_GRACE_S
            ep = self._endpoint
            self._register_secrets()
            try:
                ws = await connect(
                    ep.url,
                    additional_headers=list(ep.headers),
                    subprotocols=list(ep.subprotocols) or None,  # type: ignore[arg-type]
                    max_size=MAX_MESSAGE_BYTES,
                    ping_interval=self.ping_interval_s,
                    ping_timeout=self.ping_timeout_s,
                    open_timeout=OPEN_TIMEOUT_S,
                    close_timeout=1,
                    user_agent_header="agentd",
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = describe_failure(exc, ep.url)
                message = logs.redact(err.message)  # it reaches `ctl status` and STATUS=
                self.backoff.failed(auth=err.auth)
                delay = self.backoff.next_delay()
                if message != self.last_error:
                    log.error("%s; retrying in %.1f s", message, delay)
                else:
                    log.debug("%s; retrying in %.1f s", message, delay)
                self.last_error = message
                self._report(LinkState(False, message, kind=err.kind))
                self.due = self.clock() + delay + SCHEDULE_GRACE_S
                await self._sleep(delay)
                continue
            await self._session(ws)
            if self._closing:
                break
            if self._renewing:
                self._renewing = False
                continue
            delay = self.backoff.next_delay()
            self.due = self.clock() + delay + SCHEDULE_GRACE_S
            await self._sleep(delay)

    def _register_secrets(self) -> None:
        """The key and every custom header value go into the handshake, so into websockets'
        debug log and into error texts a proxy may echo: redact them all like the key."""
        register_secrets(self.cfg.api, self._api_key)

    async def _sleep(self, delay: float) -> None:
        await self._wait(self, delay)

    async def _retry_wait(self, delay: float) -> None:
        """The real backoff wait: ``delay`` seconds, cut short by a reconnect request."""
        self._wake_retry.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake_retry.wait(), delay)

    async def _session(self, ws: ClientConnection) -> None:
        """One open WebSocket, from the 101 to its close. Everything after the handshake is
        inside the try: a server may close at once (a draining load balancer, a quota
        close), and the first send then raises; the link must still report itself down."""
        self._ws = ws
        now = self.clock()
        self.due = None
        self.backoff.connected(now)
        if self.first_connect_done:
            self.reconnects += 1
        self.connected, self.connected_at, self.last_error = True, now, None
        self._outbox.clear()
        writer: asyncio.Task[None] | None = None
        log.info(
            "connected to %s (%s, model %s)",
            urlsplit(dialects.url(self.cfg.api)).hostname,
            self.cfg.api.dialect,
            dialects.model(self.cfg.api),
        )
        try:
            await ws.send(self.codec.encode(ce.SessionUpdate(self.session)))
            greet = not self.first_connect_done and self.cfg.agent.greeting
            self.first_connect_done = True
            if greet and self.cfg.agent.greeting:
                greeting = ce.UserText(self.cfg.agent.greeting, self.cfg.agent.greeting_type)
                await ws.send(self.codec.encode(greeting))
                await ws.send(self.codec.encode(ce.CreateResponse()))
            writer = asyncio.create_task(self._writer(ws))
            self._report(LinkState(True, renewing=self._renewing))
            async for frame in ws:
                self._dispatch(frame)
        except ConnectionClosed:
            pass
        finally:
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                    await writer
            reason = logs.redact(_close_reason(ws))
            self.connected, self._ws = False, None
            self.due = self.clock() + SCHEDULE_GRACE_S
            self._outbox.clear()
            self.backoff.disconnected(self.clock())
            if not self._closing:
                if not self._renewing:
                    brief = self.clock() - now < BRIEF_SESSION_S
                    again = brief and reason == self._last_close
                    log.log(logging.DEBUG if again else logging.WARNING, "%s; reconnecting", reason)
                    self.last_error = self._last_close = reason
                self._report(
                    LinkState(False, None if self._renewing else reason, renewing=self._renewing)
                )

    def _report(self, state: LinkState) -> None:
        """on_state, contained like on_event: the link task outlives a handler's bug."""
        try:
            self.on_state(state)
        except Exception:
            self._handler_failed(type(state).__name__)

    def _handler_failed(self, what: str) -> None:
        self.handler_errors += 1
        if self.handler_errors == 1 or self.clock() - self._handler_logged >= LOG_EVERY_S:
            self._handler_logged = self.clock()
            log.exception("handling %s failed (%d so far); continuing", what, self.handler_errors)

    def _dispatch(self, frame: str | bytes) -> None:
        """One frame: typed events to the daemon, anything else counted, never raised."""
        if isinstance(frame, bytes):
            self._protocol_error(f"a binary frame of {len(frame)} bytes")
            return
        try:
            events = self.codec.parse(frame)
        except ProtocolError as exc:
            self._protocol_error(f"a malformed server event: {exc}")
            return
        for event in events:
            try:
                self.on_event(event)
            except Exception:  # one bad event must not end the session or the link task
                self._handler_failed(type(event).__name__)

    def _protocol_error(self, what: str) -> None:
        """Count it; log at warning at most once per LOG_EVERY_S (a flood stays one line)."""
        self.protocol_errors += 1
        now = self.clock()
        if self.protocol_errors == 1 or now - self._protocol_logged >= LOG_EVERY_S:
            self._protocol_logged = now
            log.warning("ignored %s (%d so far)", what, self.protocol_errors)
        else:
            log.debug("ignored %s", what)


def _close_reason(ws: ClientConnection) -> str:
    """Who closed, with which code: what a person reading the journal needs."""
    rcvd, sent = ws.protocol.close_rcvd, ws.protocol.close_sent
    if sent is not None and (rcvd is None or ws.protocol.close_rcvd_then_sent is False):
        if sent.code == 1009:
            return f"a server message exceeded {MAX_MESSAGE_BYTES >> 20} MiB (closed 1009)"
        if sent.code == 1011:
            return f"server stopped answering pings (closed 1011: {sent.reason})"
        if sent.code == 1000:
            return "connection closed by agentd (1000)"
    if rcvd is None:
        return "connection lost without a close frame (1006)"
    if rcvd.code == 1001:
        return "server ended the session (1001, session cap?)"
    return f"server closed the connection (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"
