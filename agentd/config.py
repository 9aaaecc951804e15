"""YAML configuration → frozen settings dataclasses, with exact error paths.

The schema *is* the dataclasses below: their fields, type hints and ``metadata`` (range, doc)
drive validation, the unknown-key check and the example-file drift test, so there is one
place to add a key. Loading never raises half-way: every problem is collected and reported
as ``key.path: what is wrong (got X)`` so a person fixing the file over SSH sees them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import hmac
import ipaddress
import os
import socket
import stat
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml

DEFAULT_CONFIG_PATH = Path("/etc/agentd/config.yaml")

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

DIALECT_DEFAULTS: dict[str, dict[str, str]] = {
    "openai": {"url": "wss://api.openai.com/v1/realtime", "model": "gpt-realtime"},
    "openai-beta": {
        "url": "wss://api.openai.com/v1/realtime",
        "model": "gpt-4o-realtime-preview",
    },
    "xstar": {"url": "wss://api.xstar.city/v1/realtime", "model": "qwen-max"},
}
XSTAR_DEFAULT_INPUT_FORMAT = "Raw16KHz16BitMonoPcm"
XSTAR_DEFAULT_OUTPUT_FORMAT = "Raw24KHz16BitMonoPcm"
OPENAI_PCM_RATE = 24000


def _opt(default: Any, doc: str, lo: float | None = None, hi: float | None = None) -> Any:
    """A settings field whose metadata feeds validation and the documentation test."""
    return field(default=default, metadata={"doc": doc, "range": (lo, hi)})


def _sub(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc, "range": (None, None)})


@dataclass(frozen=True)
class DeviceSettings:
    user_id: str = _opt("{hostname}", "per-device user id; placeholders {hostname} {machine_id}")


@dataclass(frozen=True)
class ApiSettings:
    dialect: Dialect = _opt("openai", "openai (GA) | xstar | openai-beta")
    url: str | None = _opt(None, "WebSocket URL; null = the dialect's default")
    model: str | None = _opt(None, "model id (xstar: modelId[@provider]); null = default")
    api_key_env: str | None = _opt("OPENAI_API_KEY", "environment variable holding the key")
    api_key_file: str | None = _opt(None, "file holding the key (mode 0600)")
    api_key: str | None = _opt(None, "inline key: discouraged, logged as a warning")
    headers: dict[str, str] = field(
        default_factory=dict, metadata={"doc": "extra handshake headers", "range": (None, None)}
    )
    session_max_s: float = _opt(3300.0, "renew the session before this, when idle", 60, 86400)
    input_format: XstarPcmFormat | None = _opt(None, "xstar only: mic format sent")
    output_format: XstarPcmFormat | None = _opt(None, "xstar only: speech format received")

    @property
    def input_rate(self) -> int:
        """Sample rate of the audio the server expects from us."""
        if self.dialect == "xstar":
            return XSTAR_FORMAT_RATES[self.input_format or XSTAR_DEFAULT_INPUT_FORMAT]
        return OPENAI_PCM_RATE

    @property
    def output_rate(self) -> int:
        """Sample rate of the audio the server sends us."""
        if self.dialect == "xstar":
            return XSTAR_FORMAT_RATES[self.output_format or XSTAR_DEFAULT_OUTPUT_FORMAT]
        return OPENAI_PCM_RATE


@dataclass(frozen=True)
class AgentSettings:
    instructions: str = _opt(
        "You are a helpful voice assistant on a small device. Answer briefly.",
        "system prompt (xstar: agent_template={...} bot_info={...} user_info={...})",
    )
    voice: str | None = _opt(None, "voice name; null = the server's default")
    greeting: str | None = _opt(None, "text sent after the first connect")
    greeting_type: Literal["input_text", "tts_text"] = _opt(
        "input_text", "input_text (asked to the model) | tts_text (spoken verbatim, xstar)"
    )
    transcription: str | None = _opt(None, "input transcription model, or null for none")


@dataclass(frozen=True)
class InputSettings:
    device: str = _opt("default", "ALSA capture PCM (see `agentd devices`)")
    rate: int = _opt(16000, "card sample rate", 8000, 192000)
    channels: int = _opt(1, "card channels", 1, 32)
    channel: int = _opt(0, "which channel is the microphone", 0, 31)
    period_ms: Literal[10, 20, 30] = _opt(20, "frame size: 10 | 20 | 30")


@dataclass(frozen=True)
class OutputSettings:
    device: str = _opt("default", "ALSA playback PCM")
    rate: int = _opt(48000, "card sample rate", 8000, 192000)
    channels: int = _opt(1, "card channels", 1, 32)
    buffer_ms: int = _opt(80, "ALSA buffer kept at most this full", 20, 1000)
    volume: float = _opt(1.0, "gain applied to speech and cues", 0.0, 2.0)


@dataclass(frozen=True)
class AudioSettings:
    input: InputSettings = _sub(InputSettings, "microphone")
    output: OutputSettings = _sub(OutputSettings, "speaker")


@dataclass(frozen=True)
class TurnSettings:
    mode: Literal["push_to_talk", "toggle", "hands_free"] = _opt(
        "push_to_talk", "push_to_talk | toggle | hands_free"
    )
    detection: Literal["local", "server"] = _opt("local", "who ends a turn: local | server")
    max_turn_s: float = _opt(30.0, "longest turn", 1, 600)
    idle_timeout_s: float = _opt(20.0, "toggle mode: silence that ends the conversation", 1, 3600)
    response_timeout_s: float = _opt(
        15.0, "longest wait for the server to start answering before an error", 3, 300
    )


@dataclass(frozen=True)
class VadSettings:
    aggressiveness: int = _opt(2, "webrtcvad mode 0..3", 0, 3)
    preroll_ms: int = _opt(300, "audio kept from before the onset", 0, 2000)
    hangover_ms: int = _opt(500, "silence that ends speech", 100, 5000)
    min_speech_ms: int = _opt(150, "shorter bursts are not sent", 0, 5000)


@dataclass(frozen=True)
class EchoSettings:
    mode: Literal["half_duplex", "aec", "off"] = _opt("half_duplex", "half_duplex | aec | off")
    tail_ms: int = _opt(250, "mic stays closed this long after playback", 0, 5000)
    barge_in: Literal["button", "voice", "off"] = _opt("button", "button | voice | off")


@dataclass(frozen=True)
class ButtonSettings:
    pin: int | None = _opt(17, "BCM pin, or null for no button", 0, 53)
    pull_up: bool = _opt(True, "button wired to ground with the internal pull-up")
    bounce_ms: int = _opt(30, "debounce", 0, 1000)
    hold_ms: int = _opt(
        5000,
        "holding the button this long forces a reconnect (ends a turn held so long)",
        500,
        30000,
    )


@dataclass(frozen=True)
class RgbPins:
    red: int = _opt(None, "BCM pin", 0, 53)
    green: int = _opt(None, "BCM pin", 0, 53)
    blue: int = _opt(None, "BCM pin", 0, 53)


@dataclass(frozen=True)
class LedSettings:
    pin: int | None = _opt(25, "BCM pin, or null for no LED", 0, 53)
    rgb: RgbPins | None = _opt(None, "{red, green, blue} BCM pins instead of pin")
    active_high: bool = _opt(True, "false when the LED is wired to 3V3")
    brightness: float = _opt(1.0, "0..1 (PWM)", 0.0, 1.0)


@dataclass(frozen=True)
class SoundSettings:
    enabled: bool = _opt(True, "play short cues")
    volume: float = _opt(0.5, "cue volume", 0.0, 1.0)


@dataclass(frozen=True)
class ReconnectSettings:
    initial_s: float = _opt(0.5, "first retry delay", 0.01, 600)
    max_s: float = _opt(30.0, "retry delay cap", 0.1, 3600)


@dataclass(frozen=True)
class ControlSettings:
    socket: str = _opt("/run/agentd/control.sock", "unix control socket")


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = _opt("info", "debug|info|warning|error")
    transcripts: bool = _opt(False, "log what was said (privacy)")


@dataclass(frozen=True)
class Config:
    device: DeviceSettings = _sub(DeviceSettings, "device identity")
    api: ApiSettings = _sub(ApiSettings, "realtime server")
    agent: AgentSettings = _sub(AgentSettings, "the assistant")
    audio: AudioSettings = _sub(AudioSettings, "ALSA devices")
    turn: TurnSettings = _sub(TurnSettings, "turn taking")
    vad: VadSettings = _sub(VadSettings, "voice activity detection")
    echo: EchoSettings = _sub(EchoSettings, "echo suppression and barge-in")
    button: ButtonSettings = _sub(ButtonSettings, "push button")
    led: LedSettings = _sub(LedSettings, "status LED")
    sounds: SoundSettings = _sub(SoundSettings, "sound cues")
    reconnect: ReconnectSettings = _sub(ReconnectSettings, "reconnect backoff")
    control: ControlSettings = _sub(ControlSettings, "control socket")
    logging: LoggingSettings = _sub(LoggingSettings, "logging")

    @property
    def url(self) -> str:
        return self.api.url or DIALECT_DEFAULTS[self.api.dialect]["url"]

    @property
    def model(self) -> str:
        return self.api.model or DIALECT_DEFAULTS[self.api.dialect]["model"]

    def summary(self) -> str:
        """The one line `agentd check-config` prints."""
        return (
            f"dialect={self.api.dialect} model={self.model} user_id={self.device.user_id} "
            f"turn={self.turn.mode}/{self.turn.detection} "
            f"mic={self.audio.input.device}@{self.audio.input.rate} "
            f"speaker={self.audio.output.device}@{self.audio.output.rate}"
        )


# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """Every problem found in a configuration, one ``key.path: what is wrong`` line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Secret:
    """An API key that cannot leak through repr/str/format into a log line."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<redacted>, source={self.source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Loaded:
    """A validated config plus what was learned while loading it."""

    config: Config
    api_key: Secret | None
    warnings: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    #: dotted key path → the file that set it (keys not in the map are defaults)
    origins: Mapping[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------- validation


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is dict:
        return "a mapping of strings"
    return str(tp)


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _all_keys() -> dict[str, list[str]]:
    """name → full paths of every leaf key, for 'did you mean' across sections."""
    out: dict[str, list[str]] = {}

    def walk(cls: type, prefix: str) -> None:
        for name, (_, tp) in _fields(cls).items():
            path = f"{prefix}{name}"
            out.setdefault(name, []).append(path)
            inner = _strip_optional(tp)
            if dataclasses.is_dataclass(inner):
                walk(inner, path + ".")  # type: ignore[arg-type]

    walk(Config, "")
    return out


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Check ``value`` against the type hint ``tp``; return the converted value."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = _strip_optional(tp)
        return _convert(value, inner, path, problems)
    if value is None:
        problems.append(f"{path}: must be {_type_name(tp)}, not null")
        return None
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed or isinstance(value, bool):
            choices = ", ".join(str(a) for a in allowed)
            problems.append(f"{path}: must be one of {choices} (got {_describe(value)})")
            return None
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: must be true or false (got {_describe(value)})")
            return None
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            problems.append(f"{path}: must be a whole number (got {_describe(value)})")
            return None
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: must be a number (got {_describe(value)})")
            return None
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{path}: must be a string (got {_describe(value)})")
            return None
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{path}: must be a mapping (got {_describe(value)})")
            return None
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, (str, int, float)):
                problems.append(f"{path}.{k}: must be a string (got {_describe(v)})")
                continue
            out[k] = str(v)
        return out
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)  # type: ignore[arg-type]
    raise TypeError(f"unsupported schema type {tp!r} at {path}")  # a bug in the schema


def _suggest(key: str, cls: type, path: str) -> str:
    names = list(_fields(cls))
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f' (did you mean "{close[0]}"?)'
    elsewhere = _all_keys().get(key)
    if elsewhere:
        return f' (did you mean "{elsewhere[0]}"?)'
    return f" (known keys: {', '.join(names)})"


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    here = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.append(f"{here}: must be a mapping (got {_describe(data)})")
        return cls()
    known = _fields(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            problems.append(f"{path}: unknown key{_suggest(str(key), cls, prefix)}")
            continue
        f, tp = known[key]
        before = len(problems)
        converted = _convert(value, tp, path, problems)
        if len(problems) > before:
            continue
        lo, hi = f.metadata.get("range", (None, None))
        is_number = isinstance(converted, (int, float)) and not isinstance(converted, bool)
        if is_number and (
            (lo is not None and converted < lo) or (hi is not None and converted > hi)
        ):
            problems.append(f"{path}: must be between {lo:g} and {hi:g} (got {converted!r})")
            continue
        kwargs[key] = converted
    # Fields whose default is None but whose type is not optional are required inside
    # their (optional) section, e.g. led.rgb.red.
    for name, (f, tp) in known.items():
        required = f.default is None and f.default_factory is dataclasses.MISSING
        if name not in kwargs and required and not _is_optional(tp):
            path = f"{prefix}.{name}" if prefix else name
            problems.append(f"{path}: is required here")
    try:
        return cls(**kwargs)
    except TypeError:
        return None


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _check_relations(cfg: Config, problems: list[str]) -> None:
    """Rules that span keys, each reported at the key a person should edit."""
    a = cfg.audio.input
    if a.channel >= a.channels:
        problems.append(
            f"audio.input.channel: must be less than audio.input.channels={a.channels} "
            f"(got {a.channel})"
        )
    if cfg.reconnect.initial_s > cfg.reconnect.max_s:
        problems.append(
            f"reconnect.initial_s: must not exceed reconnect.max_s={cfg.reconnect.max_s:g} "
            f"(got {cfg.reconnect.initial_s:g})"
        )
    if cfg.led.pin is not None and cfg.led.rgb is not None:
        problems.append("led.rgb: set either led.pin or led.rgb, not both (set led.pin: null)")
    if cfg.api.dialect != "xstar":
        for key in ("input_format", "output_format"):
            if getattr(cfg.api, key) is not None:
                problems.append(
                    f"api.{key}: only used with api.dialect: xstar "
                    f"(got dialect {cfg.api.dialect}; OpenAI speaks 24 kHz PCM only)"
                )
    if cfg.agent.greeting_type == "tts_text" and cfg.api.dialect != "xstar":
        problems.append(
            "agent.greeting_type: tts_text is an xstar feature (use input_text with "
            f"dialect {cfg.api.dialect})"
        )
    led_pins = [cfg.led.pin] if cfg.led.pin is not None else []
    if cfg.led.rgb is not None:
        led_pins += [cfg.led.rgb.red, cfg.led.rgb.green, cfg.led.rgb.blue]
    if cfg.button.pin is not None and cfg.button.pin in led_pins:
        problems.append(f"button.pin: pin {cfg.button.pin} is also used by the LED")
    if len(set(led_pins)) != len(led_pins):
        problems.append(f"led.rgb: each colour needs its own pin (got {led_pins})")
    url = cfg.api.url
    if url is not None and not url.startswith(("ws://", "wss://")):
        problems.append(f"api.url: must start with wss:// or ws:// (got {_describe(url)})")
    elif url is not None and url.startswith("ws://") and not _is_local(url):
        problems.append(
            "api.url: ws:// would send the API key and your voice unencrypted; use wss:// "
            f"(ws:// is only allowed for this machine: localhost, 127.0.0.1, ::1; got {_host(url)})"
        )
    if cfg.api.model is not None and not cfg.api.model.strip():
        problems.append("api.model: must not be empty")
    if cfg.api.api_key_file is not None and not cfg.api.api_key_file.startswith("/"):
        problems.append(
            f"api.api_key_file: must be an absolute path (got {cfg.api.api_key_file!r}); "
            "the service runs in /"
        )
    if not cfg.control.socket.startswith("/"):
        problems.append(f"control.socket: must be an absolute path (got {cfg.control.socket!r})")


# --------------------------------------------------------------------------- placeholders


#: agentd's application id for machine-id(5) app-specific ids: fixed forever, so a device
#: keeps its user id (and the server-side memory keyed on it) across reinstalls.
APP_ID = "6eaa1fd1ef4241c19bbb3a0e4347c7ee"
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def _raw_machine_id() -> str | None:
    """The machine id (32 hex digits), or None when this system has none."""
    for candidate in MACHINE_ID_FILES:
        try:
            text = Path(candidate).read_text().strip().lower()
        except OSError:
            continue
        if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
            return text
    return None


def app_specific_id(machine_id: str, app_id: str = APP_ID) -> str:
    """What ``sd_id128_get_machine_app_specific()`` (and ``systemd-id128 machine-id
    --app-specific=APP``) returns: HMAC-SHA256 keyed with the machine id over the app id, cut
    to 128 bits and marked as a v4 UUID. machine-id(5): the raw id must never leave the
    machine, and this one cannot be turned back into it or matched with other apps' ids."""
    digest = hmac.new(bytes.fromhex(machine_id), bytes.fromhex(app_id), hashlib.sha256).digest()
    out = bytearray(digest[:16])
    out[6] = (out[6] & 0x0F) | 0x40
    out[8] = (out[8] & 0x3F) | 0x80
    return out.hex()


def _machine_id() -> str | None:
    """The value of the ``{machine_id}`` placeholder: agentd's app-specific id."""
    raw = _raw_machine_id()
    return app_specific_id(raw) if raw else None


def _expand_user_id(template: str, problems: list[str]) -> str:
    values = {"hostname": socket.gethostname()}
    if "machine_id" in template:
        machine_id = _machine_id()
        if machine_id is None:
            problems.append(
                "device.user_id: {machine_id} needs a machine id, but "
                f"{' and '.join(MACHINE_ID_FILES)} are missing or invalid "
                "(run systemd-machine-id-setup, or use {hostname} or a fixed user_id)"
            )
            return template
        values["machine_id"] = machine_id
    try:
        result = template.format_map(values)
    except KeyError as exc:
        problems.append(
            f"device.user_id: unknown placeholder {{{exc.args[0]}}} "
            "(use {hostname} or {machine_id})"
        )
        return template
    except (ValueError, IndexError) as exc:
        problems.append(f"device.user_id: bad placeholder syntax: {exc} (got {template!r})")
        return template
    if not result.strip():
        problems.append("device.user_id: must not be empty")
    return result


# --------------------------------------------------------------------------- loading


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"config: file not found: {path}")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"config: cannot read {path}: {exc}")
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problems.append(f"config: YAML syntax error at {where}: {exc.problem}")
        return None
    except yaml.YAMLError as exc:
        problems.append(f"config: YAML error in {path}: {exc}")
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(
            f"config: {path} must hold a mapping of sections (got {type(data).__name__})"
        )
        return None
    return data


def deep_merge(
    base: Mapping[str, Any],
    over: Mapping[str, Any],
    origins: dict[str, Path] | None = None,
    source: Path | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Overlay ``over`` on ``base``: mappings merge key by key, anything else replaces.

    With ``origins``, every key path ``over`` sets is recorded as coming from ``source``, so
    an error or `check-config --show` can name the file a value came from."""
    out = dict(base)
    for key, value in over.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value, origins, source, path + ".")
            continue
        out[key] = value
        if origins is not None and source is not None:
            for old in [p for p in origins if p.startswith(path + ".")]:
                del origins[old]
            _record(value, path, origins, source)
    return out


def _record(value: Any, path: str, origins: dict[str, Path], source: Path) -> None:
    origins[path] = source
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _record(inner, f"{path}.{key}", origins, source)


def overlay_files(path: Path) -> list[Path]:
    """``config.d/*.yaml`` beside the main file, in name order."""
    d = path.parent / "config.d"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _read_merged(
    path: Path, problems: list[str]
) -> tuple[dict[str, Any] | None, list[Path], dict[str, Path]]:
    """The main file with its overlays merged over it, the files read, and each key's file."""
    origins: dict[str, Path] = {}
    data = _read_yaml(path, problems)
    files = [path]
    if data is None:
        return None, files, origins
    data = deep_merge({}, data, origins, path)
    for extra in overlay_files(path):
        files.append(extra)
        over = _read_yaml(extra, problems)
        if over is not None:
            data = deep_merge(data, over, origins, extra)
    return data, files, origins


def origin_of(key: str, origins: Mapping[str, Path]) -> Path | None:
    """The file that set ``key`` (or the nearest section above it that a file set)."""
    parts = key.split(".")
    while parts:
        found = origins.get(".".join(parts))
        if found is not None:
            return found
        parts.pop()
    return None


def _name_files(problems: list[str], origins: Mapping[str, Path], main: Path) -> list[str]:
    """Prefix each problem whose key an overlay set with that overlay's path
    (``/etc/agentd/config.d/10-site.yaml: vad.agressiveness: …``)."""
    out = []
    for problem in problems:
        source = origin_of(problem.split(": ", 1)[0], origins)
        out.append(f"{source}: {problem}" if source is not None and source != main else problem)
    return out


def from_mapping(data: Mapping[str, Any]) -> Config:
    """Validate an already-parsed mapping; raise ConfigError listing every problem."""
    problems: list[str] = []
    cfg = _build(Config, data, "", problems)
    if cfg is not None and not problems:
        user_id = _expand_user_id(cfg.device.user_id, problems)
        cfg = dataclasses.replace(cfg, device=DeviceSettings(user_id=user_id))
        _check_relations(cfg, problems)
    if problems:
        raise ConfigError(problems)
    return typing.cast(Config, cfg)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "no host"
    except ValueError:
        return "no valid host"


def _is_local(url: str) -> bool:
    """Loopback only (the bundled simulator, a local proxy): nothing leaves the machine."""
    host = _host(url)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _others_can_read(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


#: The key file the unit hands the daemon as credential ``api_key`` (LoadCredential=).
UNIT_CREDENTIAL = Path("/etc/agentd/api_key")


def _whoami() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _credential(
    environ: Mapping[str, str],
    unit_credential: Path | None,
    problems: list[str],
    warnings: list[str],
) -> Secret | None:
    """The systemd credential: ``$CREDENTIALS_DIRECTORY/api_key`` under the unit; outside it
    (check-config, a run by hand) the file the unit loads, read directly when readable."""
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    origin = unit_credential or UNIT_CREDENTIAL
    if cred_dir:
        path, shown = Path(cred_dir) / "api_key", f"the systemd credential api_key ({origin})"
    elif unit_credential is not None:
        path, shown = unit_credential, f"{unit_credential} (the unit's LoadCredential=api_key)"
    else:
        return None
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        if cred_dir:  # the service itself cannot read its credential
            problems.append(f"api.api_key_env: cannot read {shown}: {exc.strerror}")
            return None
        warnings.append(
            f"api key: {path} is not readable by {_whoami()}, so whether the service has a key "
            "was not checked (it reads the file as root); check with: sudo agentd check-config"
        )
        return None
    except OSError as exc:
        problems.append(f"api.api_key_env: cannot read {shown}: {exc.strerror or exc}")
        return None
    if not value:
        problems.append(
            f"api.api_key_env: no API key: {origin} is empty; put your key in it "
            f"(sudo nano {origin})"
        )
        return None
    return Secret(value, shown)


def resolve_api_key(
    cfg: Config,
    environ: Mapping[str, str],
    problems: list[str],
    warnings: list[str],
    config_files: tuple[Path, ...] = (),
    unit_credential: Path | None = None,
) -> Secret | None:
    """Find the key: api_key_env, api_key_file, the systemd credential, inline (in order);
    ``Secret.source`` says which, for check-config and the start-up log."""
    api = cfg.api
    if api.api_key_env and environ.get(api.api_key_env, "").strip():
        return Secret(environ[api.api_key_env].strip(), f"${api.api_key_env}")
    if api.api_key_file:
        path = Path(api.api_key_file)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"api.api_key_file: cannot read {path}: {exc.strerror or exc}")
            return None
        if not value:
            problems.append(f"api.api_key_file: {path} is empty")
            return None
        if _others_can_read(path):
            warnings.append(
                f"api.api_key_file: {path} is readable by other users; run: chmod 600 {path}"
            )
        return Secret(value, str(path))
    before = len(problems)
    found = _credential(environ, unit_credential, problems, warnings)
    if found is not None:
        return found
    if api.api_key:
        del problems[before:]  # an empty credential file does not matter then
        warnings.append(
            "api.api_key: the key is written in the config file; prefer api.api_key_file "
            "or the systemd credential /etc/agentd/api_key"
        )
        for f in config_files:
            if _others_can_read(f):
                warnings.append(f"api.api_key: {f} holds a key and is readable by other users")
        return Secret(api.api_key, "api.api_key in the config file")
    if _is_local(cfg.url):
        del problems[before:]
        return None  # the bundled simulator needs no key
    if len(problems) > before or any(w.startswith("api key: ") for w in warnings):
        return None
    where = f"${api.api_key_env} is not set" if api.api_key_env else "api.api_key_env is null"
    problems.append(
        f"api.api_key_env: no API key found: {where}, and neither api.api_key_file nor "
        f"$CREDENTIALS_DIRECTORY/api_key ({UNIT_CREDENTIAL} under the service) provides one"
    )
    return None


def load(
    path: Path | str = DEFAULT_CONFIG_PATH,
    environ: Mapping[str, str] | None = None,
    require_key: bool = True,
    unit_credential: Path | None = UNIT_CREDENTIAL,
    unreadable_key_ok: bool = False,
) -> Loaded:
    """Read the main file and its ``config.d`` overlays; raise ConfigError with every problem.

    A problem in a value an overlay set names that overlay's file. ``unreadable_key_ok``
    (check-config): a key file this user may not read is a warning, not an error."""
    path = Path(path)
    env = os.environ if environ is None else environ
    problems: list[str] = []
    warnings: list[str] = []
    data, files, origins = _read_merged(path, problems)
    if problems or data is None:
        raise ConfigError(problems)
    try:
        cfg = from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(_name_files(exc.problems, origins, path)) from None
    key_problems: list[str] = []
    holder = tuple(f for f in files if origins.get("api.api_key") == f)  # the inline key's file
    key = resolve_api_key(cfg, env, key_problems, warnings, holder, unit_credential)
    unread = [w for w in warnings if w.startswith("api key: ")]
    if key is None and unread and not unreadable_key_ok:
        warnings.remove(unread[0])
        what = unread[0].removeprefix("api key: ").split(",")[0]
        key_problems.append(
            f"api.api_key_env: no API key this process can read: {what} "
            "(start agentd as root or through the service)"
        )
    if require_key:
        problems += _name_files(key_problems, origins, path)
    if problems:
        raise ConfigError(problems)
    return Loaded(cfg, key, tuple(warnings), tuple(files), origins)


def led_config(path: Path | str) -> Config | None:
    """Only the ``led`` and ``button`` sections of the files, when they are valid on their own:
    `agentd run` blinks the error on the LED the owner wired even when another key is bad."""
    problems: list[str] = []
    data, _, _ = _read_merged(Path(path), problems)
    if data is None:
        return None
    try:
        return from_mapping({k: data[k] for k in ("led", "button") if k in data})
    except ConfigError:
        return None


SECRET_KEYS = ("api.api_key", "api.headers")
REDACTED = "'***'"


def show(loaded: Loaded) -> str:
    """`agentd check-config --show`: the effective config as YAML, each value with the file it
    came from (or "default"); the key and every handshake header value are redacted."""
    lines: list[tuple[str, str]] = []

    def scalar(value: Any) -> str:
        text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
        return text.removesuffix("\n...\n").strip()

    def source(key: str) -> str:
        found = loaded.origins.get(key)
        return str(found) if found is not None else "default"

    def walk(obj: Any, prefix: str, indent: str) -> None:
        for f in dataclasses.fields(obj):
            key, value = f"{prefix}{f.name}", getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                lines.append((f"{indent}{f.name}:", ""))
                walk(value, key + ".", indent + "  ")
            elif isinstance(value, dict) and value:
                lines.append((f"{indent}{f.name}:", ""))
                for name, inner in value.items():
                    shown = REDACTED if key in SECRET_KEYS else scalar(inner)
                    lines.append((f"{indent}  {name}: {shown}", source(f"{key}.{name}")))
            else:
                shown = REDACTED if key in SECRET_KEYS and value is not None else scalar(value)
                lines.append((f"{indent}{f.name}: {shown}", source(key)))

    walk(loaded.config, "", "")
    width = min(max(len(text) for text, _ in lines), 46)
    out = [f"{text:<{width}}  # {src}" if src else text for text, src in lines]
    key = loaded.api_key.source if loaded.api_key is not None else "none (not needed or not found)"
    out.append(f"# api key: {key}")
    return "\n".join(out)


def iter_keys(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, Any, str]]:
    """Every leaf key as (path, default, doc): the example-file drift test walks this."""
    for name, (f, tp) in _fields(cls).items():
        path = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):  # optional sections (led.rgb) are leaves here
            yield path, None, f.metadata.get("doc", "")
            yield from iter_keys(tp, path + ".")  # type: ignore[arg-type]
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            yield path, default, f.metadata.get("doc", "")
