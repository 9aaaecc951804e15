"""The project's own typed client events: what the daemon asks of the server.

The state machine and the link speak these; each dialect codec turns one into a frame in
:meth:`Codec.encode <agentd.realtime.codec.Codec.encode>`. A new client event is a new
dataclass here plus one ``case`` there, never a new method called through the link.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from agentd.config import AgentSettings, ApiSettings, TurnSettings
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
    noise_reduction: str | None = None  # OpenAI GA: near_field | far_field

    @classmethod
    def of(cls, api: ApiSettings, agent: AgentSettings, turn: TurnSettings) -> SessionSettings:
        """From the sections it reads: the dialect's formats, the agent, who detects turns."""
        return cls(
            instructions=agent.instructions,
            voice=agent.voice,
            server_vad=turn.detection == "server" and turn.mode != "push_to_talk",
            transcription=agent.transcription,
            input_format=dialects.input_format(api),
            output_format=dialects.output_format(api),
            noise_reduction=api.noise_reduction,
        )


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """session.update: instructions, voice, turn detection, formats."""

    settings: SessionSettings


@dataclass(frozen=True, slots=True)
class AppendAudio:
    """input_audio_buffer.append: PCM16 mono at the API input rate."""

    pcm: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Commit:
    """input_audio_buffer.commit: the user's turn is complete."""


@dataclass(frozen=True, slots=True)
class Clear:
    """input_audio_buffer.clear: forget a turn too short to answer."""


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """response.create; ``metadata`` is passed on (GA adds the device's user_id)."""

    metadata: Mapping[str, str] | None = None


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
)
