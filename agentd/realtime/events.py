"""The project's own typed server events: what every dialect's codec parses into.

Everything downstream (conversation state machine, service, tests) speaks these, never raw
JSON, so GA/beta/xStar naming differences end at the codec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class SessionReady:
    """session.created: the server accepted the connection."""

    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    pass


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Server VAD heard the user start (turn.detection: server)."""

    item_id: str | None = None
    audio_start_ms: int = 0


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str | None = None
    audio_end_ms: int = 0


@dataclass(frozen=True, slots=True)
class InputCommitted:
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class InputCleared:
    pass


@dataclass(frozen=True, slots=True)
class ItemAdded:
    """A conversation item exists (conversation.item.added / .created / output_item.added)."""

    item_id: str
    role: str | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One delta of an assistant item's audio, as sent: the session's output format (PCM16
    mono at the output rate, MP3 bytes, an Opus packet, G.711); decoded by the daemon."""

    response_id: str | None
    item_id: str
    content_index: int
    pcm: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str | None
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """A piece of transcript; ``text`` is always the new part (cumulative deltas are diffed)."""

    role: Role
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    role: Role
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str | None
    status: str  # completed | cancelled | failed | incomplete
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` event; ``code`` is a string or None whatever the server sent."""

    type: str
    code: str | None
    message: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One server budget (``requests``, ``tokens``): how much is left and when it refills."""

    name: str
    limit: float
    remaining: float
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class RateLimits:
    """rate_limits.updated: the latest budgets, kept by the daemon for `ctl status`."""

    limits: tuple[RateLimit, ...] = ()


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """The model calls a tool: ``arguments`` is JSON text (from the arguments' ``done``
    event or the finished ``function_call`` item; the same call may come from both)."""

    response_id: str | None
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class McpApprovalRequest:
    """A remote MCP server (OpenAI GA) asks whether it may run ``name``."""

    request_id: str
    server_label: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event type this project does not handle: counted and logged at debug."""

    type: str


ServerEvent = (
    SessionReady
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | InputCleared
    | ItemAdded
    | ResponseCreated
    | AudioChunk
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | ResponseDone
    | ServerError
    | RateLimits
    | FunctionCall
    | McpApprovalRequest
    | UnknownEvent
)
