"""Dialect codecs: typed client events → JSON frames, server-event JSON → typed events.

Pure (no sockets, no asyncio): the connection hands in text frames and sends out what the
codec returns, so every naming difference between OpenAI GA, the old beta shape and xStar
ends here. Every client event leaves through :meth:`Codec.encode` (one ``case`` per event)
and :meth:`Codec._encode`, which shows each frame to :data:`FRAME_CHECKS` (where the test
suite's schema oracle sits).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, assert_never
from urllib.parse import quote

from agentd.config import ApiSettings
from agentd.realtime import client_events as ce
from agentd.realtime import dialects
from agentd.realtime.client_events import ClientEvent, SessionSettings
from agentd.realtime.dialects import OPENAI_PCM_RATE
from agentd.realtime.events import (
    AudioChunk,
    AudioDone,
    FunctionCall,
    InputCleared,
    InputCommitted,
    ItemAdded,
    McpApprovalRequest,
    RateLimit,
    RateLimits,
    ResponseCreated,
    ResponseDone,
    ServerError,
    ServerEvent,
    SessionReady,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    UnknownEvent,
)

log = logging.getLogger("agentd.realtime")

#: Event types that are normal chatter: recognised and deliberately ignored.
_IGNORED = frozenset(
    {
        "conversation.created",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.deleted",
        "conversation.item.truncated",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.text.delta",
        "response.text.done",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "conversation.item.input_audio_transcription.segment",
        "response.function_call_arguments.delta",
    }
)

_TRANSCRIPT_MEMORY = 64  # items whose cumulative transcript we remember (xStar sends totals)


# Observers of every encoded client frame, (dialect, frame) → raises on a bad frame: empty
# in the daemon; the test suite puts its schema oracle here.
FRAME_CHECKS: list[Callable[[str, str], None]] = []


class ProtocolError(ValueError):
    """A frame that is not a JSON object with a string ``type``."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect: the URL with its query, headers and subprotocols."""

    url: str
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]


def endpoint(api: ApiSettings, user_id: str, api_key: str | None) -> Endpoint:
    """URL, auth headers and subprotocols per dialect (query values unencoded, as reference
    clients send `model@provider`; only characters that would break the URL are escaped)."""
    base = dialects.url(api)
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}model={quote(dialects.model(api), safe='@:/.-_~')}"
    headers: list[tuple[str, str]] = list(api.headers.items())
    subprotocols: list[str] = []
    if api_key:
        headers.append(("Authorization", f"Bearer {api_key}"))
    if api.dialect == "xstar":
        url += f"&userId={quote(user_id, safe='@:.-_~')}"
        subprotocols = ["realtime", "openai-beta.realtime-v1"]
        if api_key:
            subprotocols.insert(1, f"openai-insecure-api-key.{api_key}")
    elif api.dialect == "openai-beta":
        headers.append(("OpenAI-Beta", "realtime=v1"))
    return Endpoint(url, tuple(headers), tuple(subprotocols))


def _ga_format(name: str) -> dict[str, Any]:
    """GA's format object: PCM names its rate; G.711 (audio/pcmu, audio/pcma) has none."""
    if name == "pcm":
        return {"type": "audio/pcm", "rate": OPENAI_PCM_RATE}
    return {"type": name}


def _b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode("ascii")


class Codec:
    """One dialect's encoder and decoder. Stateful only for xStar's cumulative transcripts."""

    dialect = "openai"

    def __init__(self, user_id: str | None = None) -> None:
        self.user_id = user_id
        self.unknown: Counter[str] = Counter()
        self._transcripts: OrderedDict[str, str] = OrderedDict()
        self._call_names: OrderedDict[str, str] = OrderedDict()  # call_id → name (item added)
        self._handlers: dict[str, Callable[[dict[str, Any]], list[ServerEvent]]] = {
            "session.created": self._session_created,
            "session.updated": lambda e: [SessionUpdated()],
            "input_audio_buffer.speech_started": lambda e: [
                SpeechStarted(_id(e.get("item_id")), _int(e.get("audio_start_ms")))
            ],
            "input_audio_buffer.speech_stopped": lambda e: [
                SpeechStopped(_id(e.get("item_id")), _int(e.get("audio_end_ms")))
            ],
            "input_audio_buffer.committed": lambda e: [InputCommitted(_id(e.get("item_id")))],
            "input_audio_buffer.cleared": lambda e: [InputCleared()],
            "conversation.item.added": self._item,
            "conversation.item.created": self._item,
            "response.output_item.added": self._item,
            "response.output_item.done": self._item_done,
            "response.function_call_arguments.done": self._call_done,
            "response.created": self._response_created,
            "response.output_audio.delta": self._audio,
            "response.audio.delta": self._audio,
            "response.output_audio.done": self._audio_done,
            "response.audio.done": self._audio_done,
            "response.output_audio_transcript.delta": self._assistant_delta,
            "response.audio_transcript.delta": self._assistant_delta,
            "response.output_audio_transcript.done": self._assistant_done,
            "response.audio_transcript.done": self._assistant_done,
            "conversation.item.input_audio_transcription.delta": self._user_delta,
            "conversation.item.input_audio_transcription.completed": self._user_done,
            "response.done": self._response_done,
            "error": self._error,
            "rate_limits.updated": self._rate_limits,
        }

    # ------------------------------------------------------------------ encoding

    def encode(self, event: ClientEvent) -> str:
        """One typed client event → one frame; dialect differences live in the hooks below
        (:meth:`_session`, :meth:`_content_kind`, :meth:`_metadata`) that subclasses override."""
        body: dict[str, Any]
        item: dict[str, Any]
        match event:
            case ce.SessionUpdate(settings):
                body = {"type": "session.update", "session": self._session(settings)}
            case ce.AppendAudio(pcm):
                body = {"type": "input_audio_buffer.append", "audio": _b64(pcm)}
            case ce.Commit():
                body = {"type": "input_audio_buffer.commit"}
            case ce.Clear():
                body = {"type": "input_audio_buffer.clear"}
            case ce.CreateResponse(metadata, out_of_band, instructions):
                body = {"type": "response.create"}
                response: dict[str, Any] = (
                    {"conversation": "none", "input": []} if out_of_band else {}
                )
                if instructions is not None:
                    response["instructions"] = instructions
                if meta := self._metadata(metadata):
                    response["metadata"] = meta
                if response:
                    body["response"] = response
            case ce.Cancel(response_id):
                body = {"type": "response.cancel"}
                if response_id:
                    body["response_id"] = response_id
            case ce.Truncate(item_id, content_index, audio_end_ms):
                body = {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": content_index,
                    "audio_end_ms": max(0, int(audio_end_ms)),
                }
            case ce.UserText(text, kind):
                content = [{"type": self._content_kind(kind), "text": text}]
                item = {"type": "message", "role": "user", "content": content}
                body = {"type": "conversation.item.create", "item": item}
            case ce.FunctionOutput(call_id, output):
                item = {"type": "function_call_output", "call_id": call_id, "output": output}
                body = {"type": "conversation.item.create", "item": item}
            case ce.McpApproval(request_id, approve):
                item = {
                    "type": "mcp_approval_response",
                    "id": f"apr_{request_id[-28:]}",  # the GA item requires an id of our own
                    "approval_request_id": request_id,
                    "approve": approve,
                }
                body = {"type": "conversation.item.create", "item": item}
            case ce.ContextMessage(role, text):
                part = {"type": "input_text" if role == "user" else self._assistant_text}
                part["text"] = text
                item = {"type": "message", "role": role, "content": [part]}
                body = {"type": "conversation.item.create", "item": item}
            case ce.ContextCall(call_id, name, arguments):
                item = {"type": "function_call", "call_id": call_id, "name": name}
                item["arguments"] = arguments
                body = {"type": "conversation.item.create", "item": item}
            case _:
                assert_never(event)
        return self._encode(body)

    def _encode(self, event: dict[str, Any]) -> str:
        """The single point every client event passes through."""
        frame = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        for check in FRAME_CHECKS:
            check(self.dialect, frame)
        return frame

    def _session(self, s: SessionSettings) -> dict[str, Any]:
        turn: dict[str, Any] | None = {"type": s.vad_type} if s.server_vad else None
        audio_in: dict[str, Any] = {
            "format": _ga_format(s.input_format),
            "turn_detection": turn,
        }
        if s.transcription:
            audio_in["transcription"] = {"model": s.transcription}
        if s.noise_reduction:
            audio_in["noise_reduction"] = {"type": s.noise_reduction}
        audio_out: dict[str, Any] = {"format": _ga_format(s.output_format)}
        if s.voice:
            audio_out["voice"] = s.voice
        return _with_tools(
            {
                "type": "realtime",
                "instructions": s.instructions,
                "output_modalities": ["audio"],
                "audio": {"input": audio_in, "output": audio_out},
            },
            s,
        )

    def _metadata(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        """GA's response metadata carries the device's user_id."""
        meta = dict(metadata or {})
        if self.user_id:
            meta.setdefault("user_id", self.user_id)
        return meta

    def _content_kind(self, kind: str) -> str:
        """Only xStar speaks ``tts_text`` verbatim; elsewhere it is ordinary input text."""
        return "input_text"

    #: an assistant message's text content type (GA ``output_text``, beta ``text``)
    _assistant_text = "output_text"

    # ------------------------------------------------------------------ decoding

    def parse(self, frame: str | bytes) -> list[ServerEvent]:
        """One server frame → zero or more typed events, each field the type the event says.

        Raises :class:`ProtocolError` (and nothing else) for a frame that is not a JSON
        object with a string ``type``, is nested too deeply, or lacks what its type needs;
        unknown types become :class:`UnknownEvent`."""
        try:
            data = json.loads(frame)
        except RecursionError:
            raise ProtocolError("JSON nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"not JSON: {str(exc)[:80]}") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise ProtocolError("not an event object with a string 'type'")
        kind: str = data["type"][:64]
        handler = self._handlers.get(kind)
        if handler is None:
            if kind in _IGNORED:
                return []
            if kind not in self.unknown and len(self.unknown) >= UNKNOWN_KINDS_MAX:
                kind = "(other)"  # a server inventing types must not grow memory
            self.unknown[kind] += 1
            log.debug("unknown server event %r (seen %d)", kind, self.unknown[kind])
            return [UnknownEvent(kind)]
        try:
            return handler(data)
        except ProtocolError:
            raise
        except Exception as exc:  # a handler bug must not escape as anything else
            raise ProtocolError(f"bad {kind} event: {type(exc).__name__}") from None

    def _session_created(self, e: dict[str, Any]) -> list[ServerEvent]:
        return [SessionReady(_id(_obj(e.get("session")).get("id")))]

    def _item(self, e: dict[str, Any]) -> list[ServerEvent]:
        item = _obj(e.get("item"), "item")
        role = item.get("role")
        if item.get("type") == "function_call" and (call_id := _id(item.get("call_id"))):
            # the arguments' done event carries no name: remember it from the item
            self._call_names[call_id] = _id(item.get("name")) or ""
            while len(self._call_names) > _TRANSCRIPT_MEMORY:
                self._call_names.popitem(last=False)
        return [
            ItemAdded(
                _required_id(item.get("id"), "item.id"),
                role if isinstance(role, str) and role in ROLES else None,
                _id(e.get("response_id")),
            )
        ]

    def _item_done(self, e: dict[str, Any]) -> list[ServerEvent]:
        """A finished output item: function calls and MCP approval requests matter here."""
        item = _obj(e.get("item"), "item")
        match item.get("type"):
            case "function_call":
                return [
                    FunctionCall(
                        _id(e.get("response_id")),
                        _required_id(item.get("call_id"), "item.call_id"),
                        _id(item.get("name")) or "",
                        _text(item.get("arguments"), ARGUMENTS_LIMIT),
                    )
                ]
            case "mcp_approval_request":
                return [
                    McpApprovalRequest(
                        _required_id(item.get("id"), "item.id"),
                        _id(item.get("server_label")),
                        _id(item.get("name")),
                    )
                ]
        return []

    def _call_done(self, e: dict[str, Any]) -> list[ServerEvent]:
        call_id = _required_id(e.get("call_id"), "call_id")
        return [
            FunctionCall(
                _id(e.get("response_id")),
                call_id,
                _id(e.get("name")) or self._call_names.get(call_id, ""),
                _text(e.get("arguments"), ARGUMENTS_LIMIT),
            )
        ]

    def _response_created(self, e: dict[str, Any]) -> list[ServerEvent]:
        resp = _obj(e.get("response"), "response")
        return [ResponseCreated(_required_id(resp.get("id"), "response.id"))]

    def _audio(self, e: dict[str, Any]) -> list[ServerEvent]:
        delta = e.get("delta")
        if not isinstance(delta, str):
            raise ProtocolError(f"audio delta is {_kind(delta)}, not base64 text")
        try:
            pcm = base64.b64decode(delta, validate=False)
        except (binascii.Error, ValueError):
            raise ProtocolError("audio delta is not base64") from None
        item_id = _required_id(e.get("item_id"), "item_id")
        return [AudioChunk(_id(e.get("response_id")), item_id, _int(e.get("content_index")), pcm)]

    def _audio_done(self, e: dict[str, Any]) -> list[ServerEvent]:
        return [AudioDone(_id(e.get("response_id")), _required_id(e.get("item_id"), "item_id"))]

    def _assistant_delta(self, e: dict[str, Any]) -> list[ServerEvent]:
        item_id = _required_id(e.get("item_id"), "item_id")
        return [TranscriptDelta("assistant", item_id, _text(e.get("delta")))]

    def _assistant_done(self, e: dict[str, Any]) -> list[ServerEvent]:
        item_id = _required_id(e.get("item_id"), "item_id")
        return [TranscriptDone("assistant", item_id, _text(e.get("transcript")))]

    def _user_delta(self, e: dict[str, Any]) -> list[ServerEvent]:
        item_id = _id(e.get("item_id")) or ""
        if e.get("delta") is not None:
            new = _text(e["delta"])
            self._remember(item_id, (self._transcripts.get(item_id, "") + new)[-TEXT_LIMIT:])
        else:  # xStar: cumulative transcript; diff against what we already passed on
            total = _text(e.get("transcript"))
            seen = self._transcripts.get(item_id, "")
            new = total[len(seen) :] if total.startswith(seen) else total
            self._remember(item_id, total)
        return [TranscriptDelta("user", item_id, new)] if new else []

    def _user_done(self, e: dict[str, Any]) -> list[ServerEvent]:
        item_id = _id(e.get("item_id")) or ""
        self._transcripts.pop(item_id, None)
        return [TranscriptDone("user", item_id, _text(e.get("transcript")))]

    def _remember(self, item_id: str, text: str) -> None:
        self._transcripts[item_id] = text
        self._transcripts.move_to_end(item_id)
        while len(self._transcripts) > _TRANSCRIPT_MEMORY:
            self._transcripts.popitem(last=False)

    def _response_done(self, e: dict[str, Any]) -> list[ServerEvent]:
        resp = _obj(e.get("response"))
        details = _obj(resp.get("status_details"))
        reason = _id(details.get("reason")) or _id(_obj(details.get("error")).get("code"))
        status = resp.get("status")
        if status is None:
            status = "completed"
        elif not (
            isinstance(status, str) and status in RESPONSE_STATUSES
        ):  # the response ended, but not in a way we know
            reason = reason or f"unknown status {(_id(status) or _kind(status))[:40]}"
            status = "incomplete"
        return [ResponseDone(_id(resp.get("id")), status, reason)]

    def _error(self, e: dict[str, Any]) -> list[ServerEvent]:
        raw = e.get("error")
        err = raw if isinstance(raw, dict) else {"message": raw}
        return [
            ServerError(
                _id(err.get("type")) or "error",
                _id(err.get("code")),
                _text(err.get("message"), MESSAGE_LIMIT),
                _id(err.get("event_id")),
            )
        ]

    def _rate_limits(self, e: dict[str, Any]) -> list[ServerEvent]:
        raw = e.get("rate_limits")
        limits = tuple(
            RateLimit(
                _id(r.get("name")) or "unnamed",
                _number(r.get("limit")),
                _number(r.get("remaining")),
                _number(r.get("reset_seconds")),
            )
            for r in (raw if isinstance(raw, list) else [])[:RATE_LIMITS_MAX]
            if isinstance(r, dict)
        )
        return [RateLimits(limits)]


class BetaCodec(Codec):
    """The pre-GA shape: flat session fields, `pcm16`, `modalities`."""

    dialect = "openai-beta"
    _assistant_text = "text"

    def _session(self, s: SessionSettings) -> dict[str, Any]:
        session: dict[str, Any] = {
            "instructions": s.instructions,
            "modalities": ["audio", "text"],
            "input_audio_format": s.input_format if s.input_format != "pcm" else "pcm16",
            "output_audio_format": s.output_format if s.output_format != "pcm" else "pcm16",
            "turn_detection": {"type": s.vad_type} if s.server_vad else None,
        }
        if s.voice:
            session["voice"] = s.voice
        if s.transcription:
            session["input_audio_transcription"] = {"model": s.transcription}
        return _with_tools(session, s)

    def _metadata(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        return dict(metadata or {})


class XstarCodec(BetaCodec):
    """xStar: beta names, exact format strings, `tts_text`; no turn_detection = push-to-talk."""

    dialect = "xstar"

    def _session(self, s: SessionSettings) -> dict[str, Any]:
        session = super()._session(s)
        if not s.server_vad:
            del session["turn_detection"]
        return session

    def _content_kind(self, kind: str) -> str:
        return kind


CODECS: dict[str, type[Codec]] = {"openai": Codec, "openai-beta": BetaCodec, "xstar": XstarCodec}


def _with_tools(session: dict[str, Any], s: SessionSettings) -> dict[str, Any]:
    """Tools and ``tool_choice`` (auto) when the session offers any."""
    if s.tools:
        session["tools"] = [dict(t) for t in s.tools]
        session["tool_choice"] = "auto"
    return session


def codec_for(dialect: str, user_id: str) -> Codec:
    return CODECS[dialect](user_id=user_id)


# Coercion of server values into the types the events declare. Servers (and proxies, and
# attackers on a bad network) send anything JSON can hold in any field: objects where strings
# belong, numbers as strings, nulls, megabytes of text. Each helper returns its type or a
# neutral value; a field an event cannot exist without raises ProtocolError instead.

ID_LIMIT = 256  # ids, codes, names: real ones are < 64 characters
TEXT_LIMIT = 16384  # one transcript piece; real deltas are a few words
ARGUMENTS_LIMIT = 65536  # a call's JSON arguments
MESSAGE_LIMIT = 500  # an error message as logged and shown in `ctl status`
RATE_LIMITS_MAX = 16
UNKNOWN_KINDS_MAX = 256
ROLES = frozenset({"user", "assistant", "system"})
RESPONSE_STATUSES = frozenset({"completed", "cancelled", "failed", "incomplete", "in_progress"})


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _obj(value: Any, name: str | None = None) -> dict[str, Any]:
    """A JSON object, or {} (or ProtocolError when ``name`` says the event needs one)."""
    if isinstance(value, dict):
        return value
    if name is not None:
        raise ProtocolError(f"{name} is {_kind(value)}, not an object")
    return {}


def _id(value: Any) -> str | None:
    """An id, code or name: a string (numbers are spelled out), else None."""
    if isinstance(value, str):
        return value[:ID_LIMIT] or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)[:ID_LIMIT]
    return None


def _required_id(value: Any, name: str) -> str:
    ident = _id(value)
    if ident is None:
        raise ProtocolError(f"{name} is {_kind(value)}, not an id")
    return ident


def _text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Server text (a transcript, a message): strings as sent, numbers spelled out, anything
    else empty; bounded so a megabyte "delta" cannot grow memory or the log."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)[:limit]
    return ""


def _number(value: Any) -> float:
    """A finite number (numeric strings accepted), else 0."""
    if isinstance(value, str):
        try:
            value = float(value.strip()[:64])
        except ValueError:
            return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return 0.0
    return number if math.isfinite(number) else 0.0


def _int(value: Any) -> int:
    """A server count or offset: a finite number (or numeric string) ≥ 0, else 0; clamped."""
    return int(min(max(_number(value), 0.0), 2.0**31))
