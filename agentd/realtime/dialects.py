"""What each dialect puts on the wire: default URL and model, audio format names and rates.

Data about the servers, kept beside the codecs that speak to them; the config schema takes its
choices (dialect names, xStar format strings) from here, and :func:`input_rate`,
:func:`output_rate`, :func:`url` and :func:`model` turn the ``api`` settings into wire facts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from agentd.config.schema import ApiSettings, WireSettings

Dialect = Literal["openai", "xstar", "openai-beta"]
XstarPcmFormat = Literal[
    "Raw8KHz16BitMonoPcm",
    "Raw16KHz16BitMonoPcm",
    "Raw24KHz16BitMonoPcm",
    "Raw44100Hz16BitMonoPcm",
]
WireFormat = Literal["pcm", "opus", "mp3", "g711_ulaw", "g711_alaw"]
#: Sample rate of each PCM format xStar accepts (the compressed ones are in XSTAR_WIRE).
XSTAR_FORMAT_RATES: dict[str, int] = {
    "Raw8KHz16BitMonoPcm": 8000,
    "Raw16KHz16BitMonoPcm": 16000,
    "Raw24KHz16BitMonoPcm": 24000,
    "Raw44100Hz16BitMonoPcm": 44100,
}
XSTAR_DEFAULT_INPUT_FORMAT = "Raw16KHz16BitMonoPcm"
XSTAR_DEFAULT_OUTPUT_FORMAT = "Raw24KHz16BitMonoPcm"
#: OpenAI (GA and beta) speaks PCM16 at this rate only.
OPENAI_PCM_RATE = 24000

DIALECT_DEFAULTS: dict[str, dict[str, str]] = {
    "openai": {"url": "wss://api.openai.com/v1/realtime", "model": "gpt-realtime"},
    "openai-beta": {
        "url": "wss://api.openai.com/v1/realtime",
        "model": "gpt-4o-realtime-preview",
    },
    "xstar": {"url": "wss://api.xstar.city/v1/realtime", "model": "qwen-max"},
}


def url(api: ApiSettings) -> str:
    """The WebSocket URL: ``api.url``, or the dialect's own."""
    return api.url or DIALECT_DEFAULTS[api.dialect]["url"]


def model(api: ApiSettings) -> str:
    """The model id: ``api.model``, or the dialect's default."""
    return api.model or DIALECT_DEFAULTS[api.dialect]["model"]


#: audio.wire formats each dialect speaks, per direction (check-config names these sets).
_OPENAI_WIRE: dict[str, tuple[str, ...]] = {
    "input": ("pcm", "g711_ulaw", "g711_alaw"),
    "output": ("pcm", "g711_ulaw", "g711_alaw"),
}
WIRE_ALLOWED: dict[str, dict[str, tuple[str, ...]]] = {
    "openai": _OPENAI_WIRE,
    "openai-beta": _OPENAI_WIRE,
    "xstar": {"input": ("pcm", "opus"), "output": ("pcm", "opus", "mp3")},
}
#: the session's name of each compressed format: xStar's exact strings, GA's format types,
#: beta's names (GA rejects the beta ones)
WIRE_NAMES: dict[str, dict[str, str]] = {
    "xstar": {"opus": "Audio16KHz16BitMonoOpus", "mp3": "MonoMp3"},
    "openai": {"g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"},
    "openai-beta": {"g711_ulaw": "g711_ulaw", "g711_alaw": "g711_alaw"},
}
#: sample rate of the PCM each compressed format carries (xStar's MP3: 24 kHz)
WIRE_RATES = {"opus": 16000, "mp3": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}
#: the compressed xStar strings back to the wire format (the simulator reads sessions)
XSTAR_WIRE = {v: k for k, v in WIRE_NAMES["xstar"].items()}


def input_format(api: ApiSettings, wire: WireSettings | None = None) -> str:
    """The mic format named in the session (xStar's exact string; ``pcm`` or the G.711
    name elsewhere)."""
    if wire is not None and wire.input != "pcm":
        return WIRE_NAMES[api.dialect][wire.input]
    if api.dialect == "xstar":
        return api.input_format or XSTAR_DEFAULT_INPUT_FORMAT
    return "pcm"


def output_format(api: ApiSettings, wire: WireSettings | None = None) -> str:
    """The speech format named in the session (xStar's exact string; ``pcm`` or the G.711
    name elsewhere)."""
    if wire is not None and wire.output != "pcm":
        return WIRE_NAMES[api.dialect][wire.output]
    if api.dialect == "xstar":
        return api.output_format or XSTAR_DEFAULT_OUTPUT_FORMAT
    return "pcm"


def input_rate(api: ApiSettings, wire: WireSettings | None = None) -> int:
    """Sample rate (Hz) of the audio the server expects from us (before any encoding)."""
    if wire is not None and wire.input != "pcm":
        return WIRE_RATES[wire.input]
    fmt = input_format(api)
    return XSTAR_FORMAT_RATES[fmt] if api.dialect == "xstar" else OPENAI_PCM_RATE


def output_rate(api: ApiSettings, wire: WireSettings | None = None) -> int:
    """Sample rate (Hz) of the audio the server sends us (after decoding)."""
    if wire is not None and wire.output != "pcm":
        return WIRE_RATES[wire.output]
    fmt = output_format(api)
    return XSTAR_FORMAT_RATES[fmt] if api.dialect == "xstar" else OPENAI_PCM_RATE
