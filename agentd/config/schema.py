"""The settings: frozen dataclasses, data only, one docstring under each field.

The fields, their type hints and their ``range`` metadata are the schema: the validator
(:mod:`agentd.config.validate`) checks a YAML mapping against them and the example-file test
walks them, so adding a key here is the one place to add it. Each part of the daemon takes the
section it uses (``TurnSettings``, ``ButtonSettings`` …), not the whole :class:`Config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agentd.realtime.dialects import Dialect, WireFormat, XstarPcmFormat
from agentd.tools.settings import ToolSettings


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
    tools: tuple[ToolSettings, ...] = field(default_factory=tuple)
    """Tools the model may call (README: Tools); builtins get_time, get_status are on."""
    context_turns: int = _opt(12, 0, 100)
    """Recent items (transcripts, tool calls) carried into a renewed session; 0 = none."""
    context_chars: int = _opt(4000, 0, 100000)
    """Characters of that carried context at most."""


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
    mixer: str | None = "auto"
    """ALSA mixer control `ctl volume` sets (auto = found on the card; null = software gain)."""


@dataclass(frozen=True)
class WireSettings:
    input: WireFormat = "pcm"
    """Uplink format: pcm | opus | g711_ulaw | g711_alaw (per dialect, see check-config)."""
    output: WireFormat = "pcm"
    """Downlink format: pcm | opus | mp3 | g711_ulaw | g711_alaw (per dialect)."""
    opus_kbps: int = _opt(24, 6, 64)
    """Opus uplink bitrate (kbit/s); 24 keeps speech at ≥ 0.9 correlation in ~3 kB/s."""
    opus_complexity: int = _opt(5, 0, 10)
    """Opus encoder complexity 0..10 (5: under 1% of a Pi 4 core, 10 costs ~2× the CPU)."""


@dataclass(frozen=True)
class AudioSettings:
    input: InputSettings = _sub(InputSettings)
    """Microphone."""
    output: OutputSettings = _sub(OutputSettings)
    """Speaker."""
    wire: WireSettings = _sub(WireSettings)
    """Audio format on the network (compressed formats save bandwidth)."""


@dataclass(frozen=True)
class TurnSettings:
    mode: Literal["push_to_talk", "toggle", "hands_free", "wake_word"] = "push_to_talk"
    """push_to_talk | toggle | hands_free | wake_word (nothing is sent before the word)."""
    detection: Literal["local", "server"] = "local"
    """Who ends a turn in toggle/hands_free: local | server."""
    server_detector: Literal["server_vad", "semantic_vad"] = "server_vad"
    """With detection: server, the server's detector: server_vad (silence) or semantic_vad
    (OpenAI's model judges whether the user finished; openai and openai-beta only)."""
    max_turn_s: float = _opt(30.0, 1, 600)
    """Longest turn (seconds)."""
    idle_timeout_s: float = _opt(20.0, 1, 3600)
    """Toggle mode: silence that ends the conversation (seconds)."""
    response_timeout_s: float = _opt(15.0, 3, 300)
    """Longest wait for the server to start answering before an error (seconds)."""
    follow_up_s: float = _opt(0.0, 0, 60)
    """wake_word: after an answer, listen this long without the word (seconds; 0 = off)."""


@dataclass(frozen=True)
class VadSettings:
    aggressiveness: int = _opt(2, 0, 3)
    """webrtcvad mode 0..3 (higher rejects more non-speech)."""
    preroll_ms: int = _opt(300, 0, 2000)
    """Audio kept from before the onset (milliseconds)."""
    # 240: whole 10, 20 and 30 ms frames (250 was counted as 260 at 20 ms, 270 at 30)
    hangover_ms: int = _opt(240, 100, 5000)
    """Silence that ends speech (milliseconds)."""
    min_speech_ms: int = _opt(150, 0, 5000)
    """Shorter bursts are not sent (milliseconds)."""
    adaptive_hangover: bool = True
    """Lengthen the hangover for a speaker whose mid-sentence pauses come near it."""


@dataclass(frozen=True)
class EchoSettings:
    mode: Literal["half_duplex", "aec", "off"] = "half_duplex"
    """half_duplex | aec (echo canceller, needs agentd[aec]) | off."""
    tail_ms: int = _opt(250, 0, 5000)
    """Mic stays closed this long after playback (milliseconds)."""
    barge_in: Literal["button", "voice", "off"] = "button"
    """Who may interrupt an answer: button | voice | off."""


@dataclass(frozen=True)
class WakeSettings:
    engine: Literal["micro", "open"] = "micro"
    """Detector: micro (microWakeWord, pip install 'agentd[wake]'); open is not offered yet."""
    words: list[str] = field(default_factory=lambda: ["okay_nabu"])
    """Bundled words: okay_nabu | hey_jarvis | hey_mycroft | alexa (any of them wakes)."""
    sensitivity: float = _opt(0.7, 0.05, 0.99)
    """Probability cutoff: lower hears more and false-accepts more (0.7: see README Wake word)."""
    refractory_s: float = _opt(2.0, 0.1, 30)
    """After a detection, ignore the word this long (seconds): one word, one wake."""
    model: str | None = None
    """Absolute path of a custom model's JSON (its .tflite beside it) instead of words."""
    noise_suppression: int = _opt(4, 0, 4)
    """Noise suppression the detector hears through: 0 off, 1..4 = 6/12/18/21 dB (needs the
    WebRTC library, in agentd[wake]); not used when audio.input.noise_suppression is on."""


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
class SpiSettings:
    bus: int = _opt(0, 0, 6)
    """Hardware SPI bus (/dev/spidev<bus>.<device>)."""
    device: int = _opt(0, 0, 2)
    """Hardware SPI chip select."""
    clock_pin: int | None = _opt(None, 0, 53)
    """Software SPI: BCM pin of the clock (with mosi_pin; bus/device then unused)."""
    mosi_pin: int | None = _opt(None, 0, 53)
    """Software SPI: BCM pin of the data line."""


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
    kind: Literal["gpio", "apa102"] = "gpio"
    """gpio (pin or rgb) | apa102 (APA102/DotStar LEDs on SPI)."""
    count: int = _opt(3, 1, 256)
    """apa102: how many LEDs are chained."""
    spi: SpiSettings = _sub(SpiSettings)
    """apa102: hardware SPI bus/device, or clock_pin + mosi_pin for software SPI."""
    colors: dict[str, str] = field(default_factory=dict)
    """RGB/apa102 colour per state as "#rrggbb" (idle, listening, thinking, speaking,
    offline, error, muted); unset states keep the built-in colours."""


@dataclass(frozen=True)
class CueFiles:
    listening: str | None = None
    """WAV played when a turn starts (null = the generated tone)."""
    done: str | None = None
    """WAV played when a turn ends."""
    error: str | None = None
    """WAV played when a turn fails."""
    connected: str | None = None
    """WAV played when the server is reached."""
    muted: str | None = None
    """WAV played when the microphone is muted or unmuted."""


@dataclass(frozen=True)
class SoundSettings:
    enabled: bool = True
    """Play short cues."""
    volume: float = _opt(0.5, 0.0, 1.0)
    """Cue volume (0..1)."""
    files: CueFiles = _sub(CueFiles)
    """Your own WAV file per cue instead of the generated tone."""


@dataclass(frozen=True)
class MuteSwitchSettings:
    pin: int | None = _opt(None, 0, 53)
    """BCM pin of a latching mute switch, or null for none."""
    pull_up: bool = True
    """Switch wired to ground with the internal pull-up."""
    active_high: bool = False
    """true when the pin reads high while the switch is on (only with pull_up: false)."""


@dataclass(frozen=True)
class RecordingSettings:
    dir: str | None = None
    """Absolute directory for debug recordings of each turn; null = off."""
    keep_turns: int = _opt(50, 1, 100000)
    """Keep at most this many turns (oldest deleted first)."""
    max_mb: float = _opt(200.0, 1, 100000)
    """Keep at most this many megabytes (oldest deleted first)."""


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
    hardware: Literal["respeaker-2mic", "voice-bonnet", "aiy-voice", "usb-speakerphone"] | None = (
        None
    )
    """A board preset: sets button, LED and sound card keys; your own keys override it."""
    mute_switch: MuteSwitchSettings = _sub(MuteSwitchSettings)
    """Latching mute switch."""
    recordings: RecordingSettings = _sub(RecordingSettings)
    """Debug recordings of each turn (off while dir is null)."""
    wake: WakeSettings = _sub(WakeSettings)
    """Wake word (turn.mode wake_word)."""
