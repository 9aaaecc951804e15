"""The project's own typed client events: what the daemon asks of the server.

The state machine and the link speak these; each dialect codec turns one into a frame in
:meth:`Codec.encode <agentd.realtime.codec.Codec.encode>`. A new client event is a new
dataclass here plus one ``case`` there, never a new method called through the link.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentd.config import AgentSettings, ApiSettings, TurnSettings
from agentd.config.schema import WireSettings
from agentd.realtime import dialects


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What `session.update` carries; built from the settings, resent after every connect."""

    instructions: str
    voice: str | None
    server_vad: bool
    transcription: str | None
    input_format: str
    output_format: str
    tools: tuple[dict[str, Any], ...] = ()
    """The session's ``tools`` (agentd.tools.registry builds them; tool_choice is auto)."""
    vad_type: str = "server_vad"  # turn.server_detector: the server detector, when server_vad
    noise_reduction: str | None = None  # OpenAI GA: near_field | far_field

    @classmethod
    def of(
        cls,
        api: ApiSettings,
        agent: AgentSettings,
        turn: TurnSettings,
        tools: tuple[dict[str, Any], ...] = (),
        wire: WireSettings | None = None,
    ) -> SessionSettings:
        """From the sections it reads: the dialect's formats (audio.wire), the agent, who
        detects turns."""
        return cls(
            tools=tools,
            instructions=agent.instructions,
            voice=agent.voice,
            server_vad=turn.detection == "server" and turn.mode != "push_to_talk",
            transcription=agent.transcription,
            input_format=dialects.input_format(api, wire),
            output_format=dialects.output_format(api, wire),
            vad_type=turn.server_detector,
            noise_reduction=api.noise_reduction,
        )


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """session.update: instructions, voice, turn detection, formats."""

    settings: SessionSettings


@dataclass(frozen=True, slots=True)
class AppendAudio:
    """input_audio_buffer.append: one packet in the session's input format (PCM16 mono at
    the API input rate, one Opus packet, G.711 bytes)."""

    pcm: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Commit:
    """input_audio_buffer.commit: the user's turn is complete."""


@dataclass(frozen=True, slots=True)
class Clear:
    """input_audio_buffer.clear: forget a turn too short to answer."""


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """response.create; ``metadata`` is passed on (GA adds the device's user_id).
    ``out_of_band``: an answer outside the conversation (``conversation: "none"``, no
    context), spoken from ``instructions`` — an announcement that leaves no trace."""

    metadata: Mapping[str, str] | None = None
    out_of_band: bool = False
    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """response.cancel: of ``response_id``, or of the active response."""

    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    """conversation.item.truncate: the server keeps only what the user heard."""

    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class UserText:
    """A user message. ``tts_text`` (xStar) is spoken verbatim without the LLM; other
    dialects send it as ``input_text``."""

    text: str
    kind: Literal["input_text", "tts_text"] = "input_text"


@dataclass(frozen=True, slots=True)
class FunctionOutput:
    """A tool call's result."""

    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class McpApproval:
    """mcp_approval_response: the configured answer to a remote MCP server's request."""

    request_id: str
    approve: bool


@dataclass(frozen=True, slots=True)
class ContextMessage:
    """A past message put back into a new session (context across renewal/reconnect)."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class ContextCall:
    """A past function call put back into a new session (its output follows as
    :class:`FunctionOutput`)."""

    call_id: str
    name: str
    arguments: str


ClientEvent = (
    SessionUpdate
    | AppendAudio
    | Commit
    | Clear
    | CreateResponse
    | Cancel
    | Truncate
    | UserText
    | FunctionOutput
    | McpApproval
    | ContextMessage
    | ContextCall
)
