"""A realtime-API simulator: a real websockets server speaking OpenAI GA, beta and xStar.

Used by the tests, `agentd demo` and `python -m agentd.sim`. It keeps the protocol rules
that bite on real servers (≥ 100 ms to commit, one active response, truncate within what
was sent), answers with synthesized speech paced like a real server, records every client
event with a timestamp, and has fault switches for the failure modes a device meets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import itertools
import json
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from agentd.audio.frame import AudioFrame, Framer, chop
from agentd.audio.pcm import to_int16
from agentd.sim import speech
from agentd.sim.wire import InputDecoder, WireStyle, stream_lead_ms
from agentd.sim.wire import deltas as wire_deltas
from agentd.sim.wire import formats as wire_formats

log = logging.getLogger("agentd.sim")

DELTA_MS = 100
MIN_COMMIT_MS = 100
DEFAULT_REPLY = "Hello from the simulator. This is a short spoken answer."


@dataclass
class Faults:
    """Switches a test flips while the server runs; each one models a real-world failure."""

    reject_status: int | None = None  # answer the handshake with this HTTP status
    close_mid_response: int | None = None  # close code sent after the first audio delta
    stall: bool = False  # stop reading (no pongs, no FIN) once a response starts
    malformed_json: bool = False  # send one broken frame before the next response
    unknown_event: bool = False  # send one event of an unknown type before the next response
    oversized_bytes: int | None = None  # send one frame this big before the next response
    error_event: dict[str, Any] | None = None  # send this error object on the next client event
    session_cap_s: float | None = None  # close 1001 this long after connect, like OpenAI at 60 min
    accept_then_close: int | None = None  # answer 101, then close with this code at once
    echo_subprotocols: bool = False  # a proxy echoing the offered subprotocols (101 or reject)
    accept_delay_s: float | None = None  # hold every handshake this long (slow server/network)
    never_answer: bool = False  # accept response.create and then say nothing (a hung server)
    #: end the next response with this status and status_details (failed / incomplete)
    response_status: tuple[str, dict[str, Any]] | None = None
    reject_input_format: bool = False  # answer a compressed input format with an error


@dataclass(frozen=True)
class Recorded:
    t: float  # time.monotonic() when the frame arrived
    conn: int
    event: dict[str, Any]


@dataclass
class Handshake:
    t: float
    path: str
    headers: Headers
    subprotocol: str | None = None


@dataclass
class _Session:
    conn_id: int
    dialect: str
    in_rate: int = 24000
    out_rate: int = 24000
    server_vad: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    buffer: bytearray = field(default_factory=bytearray)
    items: list[str] = field(default_factory=list)
    sent_ms: dict[str, int] = field(default_factory=dict)  # assistant item → audio ms sent
    active: asyncio.Task[None] | None = None
    active_id: str | None = None
    vad: Any = None
    vad_state: dict[str, Any] = field(default_factory=dict)
    said: str = ""  # the user's last words (transcript or text): what tool rules match
    outputs: list[str] = field(default_factory=list)  # function_call_outputs since the calls
    in_format: str = "pcm"
    out_format: str = "pcm"
    decoder: Any = None  # sim.wire.InputDecoder of the session's input format


def _ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}_{next(counter):06d}"


class Speech:
    """Answer audio: espeak-ng when installed (cached per text and rate), else a tone pattern."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], bytes] = {}

    def pcm(self, text: str, rate: int) -> bytes:
        key = (text, rate)
        if key not in self._cache:
            self._cache[key] = self._espeak(text, rate) or self._tones(text, rate)
        return self._cache[key]

    @staticmethod
    def _espeak(text: str, rate: int) -> bytes | None:
        if not speech.available():
            return None
        try:
            return speech.espeak_pcm(text, rate)
        except (OSError, subprocess.SubprocessError):
            return None

    @staticmethod
    def _tones(text: str, rate: int) -> bytes:
        words = max(1, len(text.split()))
        parts = []
        for i in range(words):
            t = np.arange(int(rate * 0.25)) / rate
            parts.append(0.3 * np.sin(2 * np.pi * (300 + 40 * (i % 5)) * t))
            parts.append(np.zeros(int(rate * 0.08)))
        return to_int16(np.concatenate(parts))


class Simulator:
    """Run with ``async with Simulator(...) as sim:``; connect to ``sim.url``."""

    # (dialect, frame) → raises on a schema violation: what every simulator built without
    # its own ``validate`` checks its frames with (the test suite's oracle sits here)
    default_validate: ClassVar[Callable[[str, str], None] | None] = None

    def __init__(
        self,
        dialect: str = "openai",
        host: str = "127.0.0.1",
        port: int = 0,
        pace: float = 1.0,
        reply: str = DEFAULT_REPLY,
        api_key: str | None = None,
        validate: Callable[[str, str], None] | None = None,
    ) -> None:
        self.dialect = dialect
        self.host, self.port = host, port
        self.pace = pace  # 1.0 = real time; 0 = as fast as possible; 4.0 = four times faster
        self.reply = reply
        self.api_key = api_key
        self.heard: str | None = None  # user transcript to report (no real ASR here)
        #: tool calling: the next responses each call these (name, arguments) instead of
        #: speaking; a phrase the user says (transcript or text) in ``tool_rules`` does too
        self.tool_calls: list[list[tuple[str, dict[str, Any]]]] = []
        self.tool_rules: dict[str, tuple[str, dict[str, Any]]] = {}
        #: what the answer after the outputs says: a template with {output}, or a function
        self.tool_reply: str | Callable[[str], str] = "{output}"
        self.call_id = _ids("call")
        self.think_s = 0.0  # fixed "model think time" before each answer (benches subtract it)
        self.faults = Faults()
        self.events: list[Recorded] = []
        self.handshakes: list[Handshake] = []
        self.connections = 0
        self.responses_done = 0
        self.closes: list[int | None] = []
        self.speech = Speech()
        self.wire = WireStyle()  # how compressed answers are cut (sim.wire)
        self.received: list[tuple[str, int, bytes]] = []  # last 16 turns: (format, rate, PCM)
        #: item → where a truncate cut its answer on the answer's own PCM timeline (ms): the
        #: server's idea of what the user heard (``audio_end_ms`` less the stream's lead)
        self.truncated: dict[str, float] = {}
        self._validate = validate or Simulator.default_validate
        self._server: Server | None = None
        self._conns: set[ServerConnection] = set()
        self._event_id = _ids("event")
        self._item_id = _ids("item")
        self._resp_id = _ids("resp")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Simulator:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            max_size=16 * 2**20,
            ping_interval=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime"

    def client_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r.event for r in self.events if kind is None or r.event.get("type") == kind]

    def drop_all(self) -> None:
        """Cut every connection without a close frame (server crash / restart)."""
        for ws in list(self._conns):
            ws.transport.abort()

    # ------------------------------------------------------------------ handshake

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(Handshake(time.monotonic(), request.path, request.headers))
        if self.faults.accept_delay_s:
            await asyncio.sleep(self.faults.accept_delay_s)
        status = self.faults.reject_status
        if status is None and self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                status = 401
        if status is not None:
            error: dict[str, Any] = {"message": http.HTTPStatus(status).phrase}
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            if self.faults.echo_subprotocols:
                error["offered_subprotocols"] = offered
            resp = conn.respond(status, json.dumps({"error": error}) + "\n")
            if status == 429:
                resp.headers["Retry-After"] = "1"
            if self.faults.echo_subprotocols:
                resp.headers["X-Offered-Subprotocols"] = offered
            return resp
        return None

    def _select_subprotocol(
        self, conn: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        if self.faults.echo_subprotocols:  # a broken proxy: every offer back, key included
            return Subprotocol(", ".join(offered))
        return Subprotocol("realtime") if "realtime" in offered else None

    async def inject(self, *frames: str | bytes) -> None:
        """Send raw frames (any text, any bytes) to every open connection now: the fuzz
        suite's way to put exactly what it generated on the wire."""
        for ws in list(self._conns):
            for frame in frames:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(frame)

    # ------------------------------------------------------------------ connection

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        conn_id = self.connections
        self._conns.add(ws)
        if self.handshakes:
            self.handshakes[-1].subprotocol = ws.subprotocol
        path = ws.request.path if ws.request else ""
        session = _Session(conn_id, self.dialect)
        if self.faults.accept_then_close is not None:  # a draining load balancer, a quota close
            await ws.close(self.faults.accept_then_close, "simulated close after accept")
            self._conns.discard(ws)
            self.closes.append(ws.close_code)
            return
        if self.dialect == "xstar" and "userId=" not in path:
            await self._send(
                ws,
                self._error_obj(
                    "invalid_request_error", "missing_user_id", "userId query parameter is required"
                ),
            )
        cap = None
        if self.faults.session_cap_s is not None:
            cap = asyncio.get_running_loop().call_later(
                self.faults.session_cap_s,
                lambda: asyncio.ensure_future(
                    ws.close(1001, "session reached its maximum duration")
                ),
            )
        await self._send(ws, {"type": "session.created", "session": self._session_view(session)})
        try:
            async for frame in ws:
                await self._on_frame(ws, session, frame)
        except ConnectionClosed:
            pass
        finally:
            if cap is not None:
                cap.cancel()
            if session.active is not None:
                session.active.cancel()
            self._conns.discard(ws)
            self.closes.append(ws.close_code)

    async def _send(self, ws: ServerConnection, event: dict[str, Any]) -> None:
        event = {"event_id": self._event_id(), **event}
        frame = json.dumps(event)
        if self._validate is not None:
            self._validate(self.dialect, frame)
        await ws.send(frame)

    def _name(self, ga: str, beta: str) -> str:
        return ga if self.dialect == "openai" else beta

    def _session_view(self, s: _Session) -> dict[str, Any]:
        if self.dialect == "openai":
            view: dict[str, Any] = {"type": "realtime", "model": "gpt-realtime"}
            view.update({k: v for k, v in s.config.items() if k != "type"})
            return view
        view = {"id": f"sess_{s.conn_id}", "model": "gpt-4o-realtime-preview"}
        view.update(s.config)
        if self.dialect == "xstar":
            for key in ("input_audio_format", "output_audio_format"):
                if key in view:
                    view[key] = "pcm16"  # the SDK's beta server types only know pcm16
        return view

    @staticmethod
    def _error_obj(
        kind: str, code: str, message: str, event_id: str | None = None
    ) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": kind, "code": code, "message": message, "event_id": event_id},
        }

    async def _on_frame(self, ws: ServerConnection, s: _Session, frame: str | bytes) -> None:
        try:
            event = json.loads(frame)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            await self._send(
                ws,
                self._error_obj(
                    "invalid_request_error", "invalid_json", "could not parse the client event"
                ),
            )
            return
        self.events.append(Recorded(time.monotonic(), s.conn_id, event))
        if self.faults.error_event is not None:
            err, self.faults.error_event = self.faults.error_event, None
            await self._send(
                ws, {"type": "error", "error": {"event_id": event.get("event_id"), **err}}
            )
            return
        match kind:
            case "session.update":
                await self._on_session_update(ws, s, event)
            case "input_audio_buffer.append":
                await self._on_input_audio_buffer_append(ws, s, event)
            case "input_audio_buffer.clear":
                await self._on_input_audio_buffer_clear(ws, s, event)
            case "input_audio_buffer.commit":
                await self._on_input_audio_buffer_commit(ws, s, event)
            case "conversation.item.create":
                await self._on_conversation_item_create(ws, s, event)
            case "response.create":
                await self._on_response_create(ws, s, event)
            case "response.cancel":
                await self._on_response_cancel(ws, s, event)
            case "conversation.item.truncate":
                await self._on_conversation_item_truncate(ws, s, event)
            case _:
                await self._send(
                    ws,
                    self._error_obj(
                        "invalid_request_error", "unknown_event", f"unknown client event {kind!r}"
                    ),
                )

    # ------------------------------------------------------------------ client events

    async def _on_session_update(
        self, ws: ServerConnection, s: _Session, e: dict[str, Any]
    ) -> None:
        cfg = e.get("session") or {}
        s.config.update(cfg)
        if self.dialect == "openai":
            audio = cfg.get("audio") or {}
            td = (audio.get("input") or {}).get("turn_detection")
        else:
            td = cfg.get("turn_detection")
        (s.in_format, s.in_rate), (s.out_format, s.out_rate) = wire_formats(self.dialect, s.config)
        s.decoder = InputDecoder(s.in_format, s.in_rate)
        if self.faults.reject_input_format and s.in_format != "pcm":
            await self._send(
                ws,
                self._error_obj(
                    "invalid_request_error",
                    "invalid_value",
                    f"Invalid value for input audio format: unsupported audio format {s.in_format}",
                    e.get("event_id"),
                ),
            )
        s.server_vad = isinstance(td, dict) and td.get("type") in ("server_vad", "semantic_vad")
        await self._send(ws, {"type": "session.updated", "session": self._session_view(s)})

    async def _on_input_audio_buffer_append(
        self, ws: ServerConnection, s: _Session, e: dict[str, Any]
    ) -> None:
        pcm = base64.b64decode(e.get("audio", ""))
        if s.decoder is not None:
            pcm = s.decoder.feed(pcm)
        s.buffer += pcm
        if s.server_vad:
            await self._server_vad(ws, s, pcm)

    async def _on_input_audio_buffer_clear(
        self, ws: ServerConnection, s: _Session, e: dict[str, Any]
    ) -> None:
        s.buffer.clear()
        await self._send(ws, {"type": "input_audio_buffer.cleared"})

    async def _on_input_audio_buffer_commit(
        self, ws: ServerConnection, s: _Session, e: dict[str, Any]
    ) -> None:
        ms = len(s.buffer) * 1000 // (2 * s.in_rate)
        if ms < MIN_COMMIT_MS:
            await self._send(
                ws,
                self._error_obj(
                    "invalid_request_error",
                    "input_audio_buffer_commit_empty",
                    f"buffer too small: expected at least {MIN_COMMIT_MS}ms of audio, "
                    f"but buffer only has {ms}.00ms of audio",
                    e.get("event_id"),
                ),
            )
            return
        await self._commit(ws, s)

    async def _commit(self, ws: ServerConnection, s: _Session) -> str:
        ms = len(s.buffer) * 1000 // (2 * s.in_rate)
        item_id = self._item_id()
        prev = s.items[-1] if s.items else None
        s.items.append(item_id)
        self.received = [*self.received[-15:], (s.in_format, s.in_rate, bytes(s.buffer))]
        s.buffer.clear()
        await self._send(
            ws,
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": prev},
        )
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "status": "completed",
            "object": "realtime.item",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self._send(
            ws,
            {
                "type": self._name("conversation.item.added", "conversation.item.created"),
                "item": item,
                "previous_item_id": prev,
            },
        )
        s.said = self.heard or ""
        if self._transcribes(s):
            await self._transcribe(ws, item_id, self.heard or f"[{ms / 1000:.1f} s of speech]")
        return item_id

    def _transcribes(self, s: _Session) -> bool:
        if self.dialect == "openai":
            return bool(((s.config.get("audio") or {}).get("input") or {}).get("transcription"))
        return bool(s.config.get("input_audio_transcription"))

    async def _transcribe(self, ws: ServerConnection, item_id: str, text: str) -> None:
        """User transcript: deltas (xStar: cumulative totals), then the final text."""
        words = text.split()
        for n in range(1, len(words) + 1):
            part = (
                {"transcript": " ".join(words[:n])}
                if self.dialect == "xstar"
                else {"delta": words[n - 1] + (" " if n < len(words) else "")}
            )
            await self._send(
                ws,
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    **part,
                },
            )
        done: dict[str, Any] = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "content_index": 0,
            "transcript": text,
        }
        done["usage"] = {"type": "duration", "seconds": 1.0}
        await self._send(ws, done)

    async def _on_conversation_item_create(
        self, ws: ServerConnection, s: _Session, e: dict[str, Any]
    ) -> None:
        item = dict(e.get("item") or {})
        item_id = item.get("id") or self._item_id()
        s.items.append(item_id)
        item["id"] = item_id
        text = " ".join(
            str(p.get("text", "")) for p in item.get("content") or [] if isinstance(p, dict)
        )
        if any(
            isinstance(p, dict) and p.get("type") == "tts_text" for p in item.get("content") or []
        ):
            s.config["_tts_text"] = text  # the next response speaks it verbatim
        view = {"id": item_id, "type": item.get("type", "message")}
        if view["type"] in ("message", "function_call", "function_call_output"):
            view |= {"object": "realtime.item", "status": "completed"}
        if view["type"] == "message":
            view["role"] = item.get("role", "user")
            parts = [p for p in item.get("content") or [] if isinstance(p, dict)]
            kind = parts[0].get("type") if parts else "input_text"
            view["content"] = [{"type": "input_text" if kind == "tts_text" else kind, "text": text}]
            if view["role"] == "user":
                s.said = text
                s.outputs.clear()  # outputs nobody asked an answer for are history now
        else:
            keys = ("call_id", "output", "name", "arguments", "approval_request_id", "approve")
            view.update({k: item[k] for k in keys if k in item})
            if view["type"] == "function_call_output":
                s.outputs.append(str(item.get("output", "")))
        await self._send(
            ws,
            {
                "type": self._name("conversation.item.added", "conversation.item.created"),
                "item": view,
                "previous_item_id": None,
            },
        )

    async def _on_response_create(
        self, ws: ServerConnection, s: _Session, e: dict[str, Any]
    ) -> None:
        if s.active is not None and not s.active.done():
            await self._send(
                ws,
                self._error_obj(
                    "invalid_request_error",
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: {s.active_id}",
                    e.get("event_id"),
                ),
            )
            return
        if self.faults.never_answer:
            return
        text = s.config.pop("_tts_text", None) or self.reply
        resp_id = self._resp_id()
        s.active_id = resp_id
        metadata = (e.get("response") or {}).get("metadata")
        calls = self._calls_for(s, e)
        if calls:
            s.active = asyncio.create_task(self._call_tools(ws, s, resp_id, calls, metadata))
            return
        response = e.get("response") or {}
        if response.get("conversation") == "none" and response.get("instructions"):
            text = str(response["instructions"]).splitlines()[-1]  # "say exactly …:\nTEXT"
        elif s.outputs:  # the answer after the tools: it speaks their outputs
            joined = " ".join(s.outputs)
            reply = self.tool_reply
            text = reply(joined) if callable(reply) else reply.format(output=joined)
            s.outputs.clear()
        s.active = asyncio.create_task(self._respond(ws, s, resp_id, text, metadata))

    def _calls_for(self, s: _Session, e: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The calls this response makes: queued ones first, else a rule the user's last
        words match (once); out-of-band responses never call tools."""
        if (e.get("response") or {}).get("conversation") == "none" or s.outputs:
            return []
        if self.tool_calls:
            return self.tool_calls.pop(0)
        said, s.said = s.said.lower(), ""
        for phrase, call in self.tool_rules.items():
            if phrase.lower() in said:
                return [call]
        return []

    async def _call_tools(
        self,
        ws: ServerConnection,
        s: _Session,
        resp_id: str,
        calls: list[tuple[str, dict[str, Any]]],
        metadata: dict[str, str] | None,
    ) -> None:
        """A response that only calls tools: each call's item, its arguments streamed in
        deltas, then done; the client answers with outputs and a new response.create."""
        response: dict[str, Any] = {
            "id": resp_id,
            "object": "realtime.response",
            "status": "in_progress",
            "output": [],
            "metadata": metadata,
        }
        status, details = "completed", None
        items: list[dict[str, Any]] = []
        try:
            await self._send(ws, {"type": "response.created", "response": response})
            for index, (name, arguments) in enumerate(calls):
                item_id, call_id, args = self._item_id(), self.call_id(), json.dumps(arguments)
                item = {
                    "id": item_id,
                    "type": "function_call",
                    "object": "realtime.item",
                    "status": "in_progress",
                    "call_id": call_id,
                    "name": name,
                    "arguments": "",
                }
                where = {"response_id": resp_id, "item_id": item_id, "output_index": index}
                added = {"type": "response.output_item.added", "response_id": resp_id}
                await self._send(ws, added | {"output_index": index, "item": item})
                for k in range(0, len(args), 8):
                    await self._send(
                        ws,
                        {
                            "type": "response.function_call_arguments.delta",
                            **where,
                            "call_id": call_id,
                            "delta": args[k : k + 8],
                        },
                    )
                await self._send(
                    ws,
                    {
                        "type": "response.function_call_arguments.done",
                        **where,
                        "call_id": call_id,
                        "arguments": args,
                    },
                )
                item = dict(item, status="completed", arguments=args)
                items.append(item)
                s.items.append(item_id)
                await self._send(
                    ws,
                    {
                        "type": "response.output_item.done",
                        "response_id": resp_id,
                        "output_index": index,
                        "item": item,
                    },
                )
        except asyncio.CancelledError:
            status, details = "cancelled", {"type": "cancelled", "reason": "client_cancelled"}
        except ConnectionClosed:
            return
        self.responses_done += 1
        done = dict(response, status=status, status_details=details, output=items)
        with contextlib.suppress(ConnectionClosed):
            await self._send(ws, {"type": "response.done", "response": done})

    async def _on_response_cancel(
        self, ws: ServerConnection, s: _Session, e: dict[str, Any]
    ) -> None:
        if s.active is None or s.active.done():
            await self._send(
                ws,
                self._error_obj(
                    "invalid_request_error",
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                    e.get("event_id"),
                ),
            )
            return
        s.active.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await s.active

    async def _on_conversation_item_truncate(
        self, ws: ServerConnection, s: _Session, e: dict[str, Any]
    ) -> None:
        item_id, end = e.get("item_id"), e.get("audio_end_ms", 0)
        if item_id not in s.sent_ms:
            await self._send(
                ws,
                self._error_obj(
                    "invalid_request_error",
                    "item_not_found",
                    f"Item with item_id not found: {item_id}",
                    e.get("event_id"),
                ),
            )
        elif end > s.sent_ms[item_id]:
            await self._send(
                ws,
                self._error_obj(
                    "invalid_request_error",
                    "invalid_value",
                    f"audio_end_ms {end} is longer than the audio sent ({s.sent_ms[item_id]} ms)",
                    e.get("event_id"),
                ),
            )
        else:
            self.truncated[item_id] = max(0.0, end - stream_lead_ms(s.out_format, s.out_rate))
            await self._send(
                ws,
                {
                    "type": "conversation.item.truncated",
                    "item_id": item_id,
                    "content_index": e.get("content_index", 0),
                    "audio_end_ms": end,
                },
            )

    # ------------------------------------------------------------------ responses

    async def _pre_response_faults(self, ws: ServerConnection) -> None:
        f = self.faults
        if f.malformed_json:
            f.malformed_json = False
            await ws.send('{"type": "response.created", "response": {')
        if f.unknown_event:
            f.unknown_event = False
            await ws.send(json.dumps({"type": "sim.unknown_thing", "event_id": "x"}))
        if f.oversized_bytes:
            n, f.oversized_bytes = f.oversized_bytes, None
            await ws.send(json.dumps({"type": "sim.padding", "pad": "x" * n}))

    async def _respond(
        self,
        ws: ServerConnection,
        s: _Session,
        resp_id: str,
        text: str,
        metadata: dict[str, str] | None,
    ) -> None:
        item_id = self._item_id()
        status, details = "completed", None
        response: dict[str, Any] = {
            "id": resp_id,
            "object": "realtime.response",
            "status": "in_progress",
            "output": [],
            "metadata": metadata,
        }
        try:
            if self.think_s:
                await asyncio.sleep(self.think_s)
            await self._pre_response_faults(ws)
            await self._send(ws, {"type": "response.created", "response": response})
            item = {
                "id": item_id,
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "object": "realtime.item",
                "content": [],
            }
            await self._send(
                ws,
                {
                    "type": "response.output_item.added",
                    "response_id": resp_id,
                    "output_index": 0,
                    "item": item,
                },
            )
            s.items.append(item_id)
            s.sent_ms[item_id] = 0
            pcm = self.speech.pcm(text, s.out_rate)
            words = text.split()
            where = {
                "response_id": resp_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
            }
            start = time.monotonic()
            if s.out_format == "pcm":
                frames = chop(pcm, s.out_rate, DELTA_MS, tail=True) or [AudioFrame(b"", s.out_rate)]
                deltas = [(f.audio, float(f.milliseconds)) for f in frames]
            else:
                deltas = wire_deltas(pcm, s.out_format, s.out_rate, self.wire) or [(b"", 0.0)]
            n_chunks = len(deltas)
            sent = 0.0
            for i, (data, ms) in enumerate(deltas):
                await self._send(
                    ws,
                    {
                        "type": self._name("response.output_audio.delta", "response.audio.delta"),
                        **where,
                        "delta": base64.b64encode(data).decode(),
                    },
                )
                sent += ms
                s.sent_ms[item_id] = round(sent)
                w0, w1 = i * len(words) // n_chunks, (i + 1) * len(words) // n_chunks
                if w1 > w0:
                    await self._send(
                        ws,
                        {
                            "type": self._name(
                                "response.output_audio_transcript.delta",
                                "response.audio_transcript.delta",
                            ),
                            **where,
                            "delta": " ".join(words[w0:w1]) + " ",
                        },
                    )
                if i == 0 and self.faults.close_mid_response is not None:
                    code, self.faults.close_mid_response = self.faults.close_mid_response, None
                    await ws.close(code, "simulated server close")
                    return
                if i == 0 and self.faults.stall:
                    ws.transport.pause_reading()
                    await asyncio.sleep(3600)
                if self.pace > 0:
                    due = start + sent / 1000 / self.pace
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self._send(
                ws,
                {"type": self._name("response.output_audio.done", "response.audio.done"), **where},
            )
            await self._send(
                ws,
                {
                    "type": self._name(
                        "response.output_audio_transcript.done", "response.audio_transcript.done"
                    ),
                    **where,
                    "transcript": text,
                },
            )
        except asyncio.CancelledError:
            status, details = "cancelled", {"type": "cancelled", "reason": "client_cancelled"}
        except ConnectionClosed:
            return
        if status == "completed" and self.faults.response_status is not None:
            (status, details), self.faults.response_status = self.faults.response_status, None
        response = dict(response, status=status, status_details=details)
        self.responses_done += 1
        used = self.responses_done
        limits = [  # like OpenAI after each response: what is left of the budgets
            {"name": "requests", "limit": 5000, "remaining": 5000 - used, "reset_seconds": 0.012},
            {
                "name": "tokens",
                "limit": 40000,
                "remaining": 40000 - 350 * used,
                "reset_seconds": 0.5,
            },
        ]
        with contextlib.suppress(ConnectionClosed):
            await self._send(ws, {"type": "response.done", "response": response})
            await self._send(ws, {"type": "rate_limits.updated", "rate_limits": limits})

    # ------------------------------------------------------------------ server VAD

    async def _server_vad(self, ws: ServerConnection, s: _Session, pcm: bytes) -> None:
        import soxr
        import webrtcvad

        st = s.vad_state
        if s.vad is None:
            s.vad = webrtcvad.Vad(2)
            st.update(
                framer=Framer(16000, 30),
                run=0,
                silence=0,
                speaking=False,
                ms=0,
                rs=soxr.ResampleStream(s.in_rate, 16000, 1, dtype="int16"),
            )
        x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        for frame in st["framer"].push(st["rs"].resample_chunk(x).astype("<i2").tobytes()):
            st["ms"] += frame.milliseconds
            voiced = s.vad.is_speech(frame.audio, 16000)
            if not st["speaking"]:
                st["run"] = st["run"] + 1 if voiced else 0
                if st["run"] >= 3:
                    st.update(speaking=True, silence=0, item=self._item_id())
                    await self._send(
                        ws,
                        {
                            "type": "input_audio_buffer.speech_started",
                            "audio_start_ms": max(0, st["ms"] - 300),
                            "item_id": st["item"],
                        },
                    )
            else:
                st["silence"] = 0 if voiced else st["silence"] + frame.milliseconds
                if st["silence"] >= 500:
                    st.update(speaking=False, run=0)
                    await self._send(
                        ws,
                        {
                            "type": "input_audio_buffer.speech_stopped",
                            "audio_end_ms": st["ms"],
                            "item_id": st["item"],
                        },
                    )
                    await self._commit(ws, s)
                    await self._on_response_create(ws, s, {})
