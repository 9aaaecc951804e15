"""Schema oracle: every client event the project sends, checked strictly against the pinned
openai-python SDK types (GA union for `openai`, beta union for `openai-beta`/`xstar`), and every
simulator server event against the SDK's server unions. Strict = discriminated on `type` and
no unknown key at any level (the SDK models accept unknown keys silently).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, get_args

import openai.types.beta.realtime as beta
import openai.types.realtime as ga
from pydantic import BaseModel, Field, TypeAdapter

XSTAR_FORMATS = {
    "Raw8KHz16BitMonoPcm",
    "Raw16KHz16BitMonoPcm",
    "Raw24KHz16BitMonoPcm",
    "Raw44100Hz16BitMonoPcm",
    "MonoMp3",
    "Audio16KHz16BitMonoOpus",
}


def _adapter(union: Any) -> TypeAdapter[Any]:
    members = get_args(union)[0]
    return TypeAdapter(Annotated[members, Field(discriminator="type")])


CLIENT = {
    "openai": _adapter(ga.RealtimeClientEvent),
    "openai-beta": _adapter(beta.RealtimeClientEvent),
    "xstar": _adapter(beta.RealtimeClientEvent),
}
SERVER = {
    "openai": _adapter(ga.RealtimeServerEvent),
    "openai-beta": _adapter(beta.RealtimeServerEvent),
    "xstar": _adapter(beta.RealtimeServerEvent),
}


class SchemaViolation(AssertionError):
    pass


def _extras(model: Any, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(model, BaseModel):
        for key in model.model_extra or {}:
            found.append(f"{path}.{key}")
        for name in type(model).model_fields:
            found += _extras(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list | tuple):
        for i, item in enumerate(model):
            found += _extras(item, f"{path}[{i}]")
    elif isinstance(model, dict):
        for k, v in model.items():
            found += _extras(v, f"{path}.{k}")
    return found


def _xstar_view(event: dict[str, Any]) -> dict[str, Any]:
    """xStar's additions (format strings, tts_text) checked here, then mapped onto beta."""
    event = json.loads(json.dumps(event))
    session = event.get("session")
    if event.get("type") == "session.update" and isinstance(session, dict):
        for key in ("input_audio_format", "output_audio_format"):
            if key in session:
                if session[key] not in XSTAR_FORMATS:
                    raise SchemaViolation(f"session.{key}: not an xStar format: {session[key]!r}")
                session[key] = "pcm16"
    delta_type = "conversation.item.input_audio_transcription.delta"
    if event.get("type") == delta_type and "transcript" in event:
        event["delta"] = event.pop("transcript")  # xStar sends the cumulative transcript
    item = event.get("item")
    if isinstance(item, dict):
        for part in item.get("content") or []:
            if isinstance(part, dict) and part.get("type") == "tts_text":
                part["type"] = "input_text"
    return event


def validate(table: dict[str, TypeAdapter[Any]], dialect: str, message: str | bytes) -> None:
    event = json.loads(message)
    if dialect == "xstar":
        event = _xstar_view(event)
    try:
        model = table[dialect].validate_python(event)
    except Exception as exc:  # pydantic.ValidationError, with the exact failing path
        raise SchemaViolation(f"{dialect}: {event.get('type')}: {exc}") from None
    extra = _extras(model, event.get("type", "?"))
    if extra:
        raise SchemaViolation(f"{dialect}: unknown keys {extra}")


def validate_client(dialect: str, message: str | bytes) -> None:
    validate(CLIENT, dialect, message)


def validate_server(dialect: str, message: str | bytes) -> None:
    validate(SERVER, dialect, message)
