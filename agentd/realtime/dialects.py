"""What each dialect puts on the wire: default URL and model, audio format names and rates.

Data about the servers, kept beside the codecs that speak to them; the config schema takes its
choices (dialect names, xStar format strings) from here, and :func:`input_rate`,
:func:`output_rate`, :func:`url` and :func:`model` turn the ``api`` settings into wire facts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from agentd.config.schema import ApiSettings

Dialect = Literal["openai", "xstar", "openai-beta"]
XstarPcmFormat = Literal[
    "Raw8KHz16BitMonoPcm",
    "Raw16KHz16BitMonoPcm",
    "Raw24KHz16BitMonoPcm",
    "Raw44100Hz16BitMonoPcm",
]
#: Sample rate of each PCM format xStar accepts (MonoMp3/Opus would need a codec on the Pi).
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


def input_format(api: ApiSettings) -> str:
    """The mic format named in the session (xStar's exact string; ``pcm`` elsewhere)."""
    if api.dialect == "xstar":
        return api.input_format or XSTAR_DEFAULT_INPUT_FORMAT
    return "pcm"


def output_format(api: ApiSettings) -> str:
    """The speech format named in the session (xStar's exact string; ``pcm`` elsewhere)."""
    if api.dialect == "xstar":
        return api.output_format or XSTAR_DEFAULT_OUTPUT_FORMAT
    return "pcm"


def input_rate(api: ApiSettings) -> int:
    """Sample rate (Hz) of the audio the server expects from us."""
    fmt = input_format(api)
    return XSTAR_FORMAT_RATES[fmt] if api.dialect == "xstar" else OPENAI_PCM_RATE


def output_rate(api: ApiSettings) -> int:
    """Sample rate (Hz) of the audio the server sends us."""
    fmt = output_format(api)
    return XSTAR_FORMAT_RATES[fmt] if api.dialect == "xstar" else OPENAI_PCM_RATE
