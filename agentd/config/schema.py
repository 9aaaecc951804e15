"""The settings: frozen dataclasses, data only, one docstring under each field.

The fields, their type hints and their ``range`` metadata are the schema: the validator
(:mod:`agentd.config.validate`) checks a YAML mapping against them and the example-file test
walks them, so adding a key here is the one place to add it. Each part of the daemon takes the
section it uses (``TurnSettings``, ``ButtonSettings`` …), not the whole :class:`Config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agentd.realtime.dialects import Dialect, XstarPcmFormat


def _opt(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """A field with its allowed range (inclusive; None = open) for the validator."""
    return field(default=default, metadata={"range": (lo, hi)})


def _sub(cls: type) -> Any:
    return field(default_factory=cls)


@dataclass(frozen=True)
class DeviceSettings:
    user_id: str = "{hostname}"
    """Per-device user id (xStar keys its memory on it); placeholders {hostname} {machine_id}."""


@dataclass(frozen=True)
class ApiSettings:
    dialect: Dialect = "openai"
    """Server dialect: openai (GA) | xstar | openai-beta."""
    url: str | None = None
    """WebSocket URL (wss://, ws:// only on this machine); null = the dialect's default."""
    model: str | None = None
    """Model id (xstar: modelId[@provider]); null = the dialect's default."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key."""
    api_key_file: str | None = None
    """Absolute path of a file holding the API key (mode 0600)."""
    api_key: str | None = None
    """Inline API key: discouraged, logged as a warning."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra WebSocket handshake headers, name: value (values are treated as secrets)."""
    session_max_s: float = _opt(3300.0, 60, 86400)
    """Renew the session before it is this old (seconds), at an idle moment."""
    input_format: XstarPcmFormat | None = None
    """xstar only: mic format sent; null = Raw16KHz16BitMonoPcm."""
    output_format: XstarPcmFormat | None = None
    """xstar only: speech format received; null = Raw24KHz16BitMonoPcm."""
    noise_reduction: Literal["near_field", "far_field"] | None = None
    """openai (GA) only: the server's input noise reduction; null = none."""


@dataclass(frozen=True)
class AgentSettings:
    instructions: str = "You are a helpful voice assistant on a small device. Answer briefly."
    """System prompt (xstar: agent_template={...} bot_info={...} user_info={...})."""
    voice: str | None = None
    """Voice name; null = the server's default."""
    greeting: str | None = None
    """Text sent after the first connect; null = none."""
    greeting_type: Literal["input_text", "tts_text"] = "input_text"
    """input_text (asked to the model) | tts_text (spoken verbatim, xstar)."""
    transcription: str | None = None
    """Input transcription model, or null for none."""


@dataclass(frozen=True)
class InputSettings:
    device: str = "default"
    """ALSA capture PCM (see `agentd devices`)."""
    rate: int = _opt(16000, 8000, 192000)
    """Card sample rate (Hz)."""
    channels: int = _opt(1, 1, 32)
    """Channels the card captures."""
    channel: int = _opt(0, 0, 31)
    """Which channel is the microphone (0-based)."""
    period_ms: Literal[10, 20, 30] = 20
    """Frame size (milliseconds): 10 | 20 | 30."""
    noise_suppression: int = _opt(0, 0, 4)
    """Local noise suppression: 0 off, 1..4 = 6/12/18/21 dB (needs agentd[aec])."""
    auto_gain: int = _opt(0, 0, 50)
    """Local automatic gain: 0 off, else the most gain it may add in dB (needs agentd[aec])."""


@dataclass(frozen=True)
class OutputSettings:
    device: str = "default"
    """ALSA playback PCM."""
    rate: int = _opt(48000, 8000, 192000)
    """Card sample rate (Hz)."""
    channels: int = _opt(1, 1, 32)
    """Channels the card plays."""
    buffer_ms: int = _opt(80, 20, 1000)
    """ALSA buffer kept at most this full (milliseconds)."""
    volume: float = _opt(1.0, 0.0, 2.0)
    """Gain applied to speech and cues (1.0 = unchanged)."""


@dataclass(frozen=True)
class AudioSettings:
    input: InputSettings = _sub(InputSettings)
    """Microphone."""
    output: OutputSettings = _sub(OutputSettings)
    """Speaker."""


@dataclass(frozen=True)
class TurnSettings:
    mode: Literal["push_to_talk", "toggle", "hands_free"] = "push_to_talk"
    """push_to_talk | toggle | hands_free."""
    detection: Literal["local", "server"] = "local"
    """Who ends a turn in toggle/hands_free: local | server."""
    max_turn_s: float = _opt(30.0, 1, 600)
    """Longest turn (seconds)."""
    idle_timeout_s: float = _opt(20.0, 1, 3600)
    """Toggle mode: silence that ends the conversation (seconds)."""
    response_timeout_s: float = _opt(15.0, 3, 300)
    """Longest wait for the server to start answering before an error (seconds)."""


@dataclass(frozen=True)
class VadSettings:
    aggressiveness: int = _opt(2, 0, 3)
    """webrtcvad mode 0..3 (higher rejects more non-speech)."""
    preroll_ms: int = _opt(300, 0, 2000)
    """Audio kept from before the onset (milliseconds)."""
    hangover_ms: int = _opt(500, 100, 5000)
    """Silence that ends speech (milliseconds)."""
    min_speech_ms: int = _opt(150, 0, 5000)
    """Shorter bursts are not sent (milliseconds)."""


@dataclass(frozen=True)
class EchoSettings:
    mode: Literal["half_duplex", "aec", "off"] = "half_duplex"
    """half_duplex | aec (echo canceller, needs agentd[aec]) | off."""
    tail_ms: int = _opt(250, 0, 5000)
    """Mic stays closed this long after playback (milliseconds)."""
    barge_in: Literal["button", "voice", "off"] = "button"
    """Who may interrupt an answer: button | voice | off."""


@dataclass(frozen=True)
class ButtonSettings:
    pin: int | None = _opt(17, 0, 53)
    """BCM pin, or null for no button."""
    pull_up: bool = True
    """Button wired to ground with the internal pull-up."""
    bounce_ms: int = _opt(30, 0, 1000)
    """Debounce time (milliseconds)."""
    hold_ms: int = _opt(5000, 500, 30000)
    """Holding the button this long (milliseconds) forces a reconnect (ends a turn held so long)."""


@dataclass(frozen=True)
class RgbPins:
    red: int = _opt(None, 0, 53)
    """BCM pin of the red LED."""
    green: int = _opt(None, 0, 53)
    """BCM pin of the green LED."""
    blue: int = _opt(None, 0, 53)
    """BCM pin of the blue LED."""


@dataclass(frozen=True)
class LedSettings:
    pin: int | None = _opt(25, 0, 53)
    """BCM pin, or null for no LED."""
    rgb: RgbPins | None = None
    """{red, green, blue} BCM pins instead of pin."""
    active_high: bool = True
    """false when the LED is wired to 3V3."""
    brightness: float = _opt(1.0, 0.0, 1.0)
    """0..1 (PWM duty)."""


@dataclass(frozen=True)
class SoundSettings:
    enabled: bool = True
    """Play short cues."""
    volume: float = _opt(0.5, 0.0, 1.0)
    """Cue volume (0..1)."""


@dataclass(frozen=True)
class ReconnectSettings:
    initial_s: float = _opt(0.5, 0.01, 600)
    """First retry delay (seconds)."""
    max_s: float = _opt(30.0, 0.1, 3600)
    """Retry delay cap (seconds)."""


@dataclass(frozen=True)
class ControlSettings:
    socket: str = "/run/agentd/control.sock"
    """Absolute path of the unix control socket."""


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    """debug | info | warning | error."""
    transcripts: bool = False
    """Log what was said (privacy)."""


@dataclass(frozen=True)
class Config:
    device: DeviceSettings = _sub(DeviceSettings)
    """Device identity."""
    api: ApiSettings = _sub(ApiSettings)
    """Realtime server."""
    agent: AgentSettings = _sub(AgentSettings)
    """The assistant."""
    audio: AudioSettings = _sub(AudioSettings)
    """ALSA devices."""
    turn: TurnSettings = _sub(TurnSettings)
    """Turn taking."""
    vad: VadSettings = _sub(VadSettings)
    """Voice activity detection."""
    echo: EchoSettings = _sub(EchoSettings)
    """Echo suppression and barge-in."""
    button: ButtonSettings = _sub(ButtonSettings)
    """Push button."""
    led: LedSettings = _sub(LedSettings)
    """Status LED."""
    sounds: SoundSettings = _sub(SoundSettings)
    """Sound cues."""
    reconnect: ReconnectSettings = _sub(ReconnectSettings)
    """Reconnect backoff."""
    control: ControlSettings = _sub(ControlSettings)
    """Control socket."""
    logging: LoggingSettings = _sub(LoggingSettings)
    """Logging."""
