"""A parsed YAML mapping checked against the schema, every problem at once.

Nothing here stops at the first mistake: each problem is collected as ``key.path: what is
wrong (got X)``, with a "did you mean" for a misspelt key (in its section or another), so a
person fixing the file over SSH sees them all in one run of `agentd check-config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from agentd.config.schema import Config


class ConfigError(Exception):
    """Every problem found in a configuration, one ``key.path: what is wrong`` line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


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


def fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """A settings class's fields with their resolved type hints, by name."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _all_keys() -> dict[str, list[str]]:
    """name → full paths of every leaf key, for 'did you mean' across sections."""
    out: dict[str, list[str]] = {}

    def walk(cls: type, prefix: str) -> None:
        for name, (_, tp) in fields(cls).items():
            path = f"{prefix}{name}"
            out.setdefault(name, []).append(path)
            inner = strip_optional(tp)
            if dataclasses.is_dataclass(inner):
                walk(inner, path + ".")  # type: ignore[arg-type]

    walk(Config, "")
    return out


def strip_optional(tp: Any) -> Any:
    """``X | None`` → ``X``; anything else unchanged."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Check ``value`` against the type hint ``tp``; return the converted value."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = strip_optional(tp)
        return _convert(value, inner, path, problems)
    if tp is Any:  # free-form JSON (a tool's schema or body template)
        return value
    if value is None:
        problems.append(f"{path}: must be {_type_name(tp)}, not null")
        return None
    if origin is tuple:  # a list: each element checked at path[i]
        if not isinstance(value, list | tuple):
            problems.append(f"{path}: must be a list (got {_describe(value)})")
            return None
        return tuple(
            _convert(v, get_args(tp)[0], f"{path}[{i}]", problems) for i, v in enumerate(value)
        )
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
        if get_args(tp)[1:] == (Any,):
            return {str(k): v for k, v in value.items()}
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, (str, int, float)):
                problems.append(f"{path}.{k}: must be a string (got {_describe(v)})")
                continue
            out[k] = str(v)
        return out
    if origin is list:
        return _list(value, get_args(tp)[0], path, problems)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, problems)  # type: ignore[arg-type]
    raise TypeError(f"unsupported schema type {tp!r} at {path}")  # a bug in the schema


def _list(value: Any, item: Any, path: str, problems: list[str]) -> list[Any] | None:
    """A YAML list, each item checked (``path[i]`` in a message)."""
    if not isinstance(value, list):
        problems.append(f"{path}: must be a list (got {_describe(value)})")
        return None
    before = len(problems)
    out = [_convert(v, item, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return out if len(problems) == before else None


def _suggest(key: str, cls: type, path: str) -> str:
    names = list(fields(cls))
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f' (did you mean "{close[0]}"?)'
    elsewhere = _all_keys().get(key)
    if elsewhere:
        return f' (did you mean "{elsewhere[0]}"?)'
    return f" (known keys: {', '.join(names)})"


def build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    """``cls`` built from ``data``, each problem appended to ``problems`` (None if it cannot
    be built)."""
    here = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.append(f"{here}: must be a mapping (got {_describe(data)})")
        return cls()
    known = fields(cls)
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
        if name not in kwargs and required and not _is_optional(tp) and tp is not Any:
            path = f"{prefix}.{name}" if prefix else name
            problems.append(f"{path}: is required here")
    try:
        return cls(**kwargs)
    except TypeError:
        return None


def host(url: str) -> str:
    """The host part of ``url`` for a message (never the query, which may hold secrets)."""
    try:
        return urlsplit(url).hostname or "no host"
    except ValueError:
        return "no valid host"


def is_local(url: str) -> bool:
    """Loopback only (the bundled simulator, a local proxy): nothing leaves the machine."""
    name = host(url)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_relations(cfg: Config, problems: list[str]) -> None:
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
    check_wire(cfg, problems)
    if cfg.turn.server_detector != "server_vad":
        if cfg.turn.detection != "server" or cfg.turn.mode == "push_to_talk":
            problems.append(
                "turn.server_detector: only used with turn.detection: server in toggle or "
                "hands_free mode (set turn.detection: server, or remove the key)"
            )
        elif cfg.api.dialect == "xstar":
            problems.append(
                "turn.server_detector: semantic_vad is an OpenAI detector; xstar has only "
                "server_vad (remove the key, or use turn.detection: local)"
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
    elif url is not None and url.startswith("ws://") and not is_local(url):
        problems.append(
            "api.url: ws:// would send the API key and your voice unencrypted; use wss:// "
            f"(ws:// is only allowed for this machine: localhost, 127.0.0.1, ::1; got {host(url)})"
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
    _check_hat(cfg, problems)
    from agentd.tools.check import check_tools  # the tools' own rules, beside them

    check_tools(cfg, problems)
    from agentd.voice.wake import problems as wake_problems  # the engine is an optional extra

    problems += wake_problems(cfg.turn.mode, cfg.wake, cfg.turn.follow_up_s)


LED_STATES = ("idle", "listening", "thinking", "speaking", "offline", "error", "muted")


def _check_hat(cfg: Config, problems: list[str]) -> None:
    """The HAT keys (issue 24): LED kind and colours, the mute switch, recordings, cue files."""
    from agentd.device.cues import load_wav  # numpy: only when a config is checked

    led = cfg.led
    how = f" (hardware: {cfg.hardware} sets led.kind: apa102)" if cfg.hardware else ""
    if led.kind == "apa102" and (led.pin is not None or led.rgb is not None):
        which = "led.pin" if led.pin is not None else "led.rgb"
        problems.append(
            f"{which}: not used with led.kind: apa102{how}; set {which}: null, or led.kind: gpio"
        )
    spi = led.spi
    if (spi.clock_pin is None) != (spi.mosi_pin is None):
        problems.append("led.spi: software SPI needs both clock_pin and mosi_pin")
    elif spi.clock_pin is not None and spi.clock_pin == spi.mosi_pin:
        problems.append(f"led.spi.mosi_pin: must differ from clock_pin (got {spi.mosi_pin})")
    for state, colour in led.colors.items():
        if state not in LED_STATES:
            problems.append(f"led.colors.{state}: unknown state (use {', '.join(LED_STATES)})")
        elif not re.fullmatch(r"#[0-9a-fA-F]{6}", colour):
            problems.append(f'led.colors.{state}: must be "#rrggbb" (got {_describe(colour)})')
    ms = cfg.mute_switch
    if ms.pin is not None:
        used = {"button.pin": cfg.button.pin, "led.pin": led.pin}
        if led.kind == "apa102":
            used |= {"led.spi.clock_pin": spi.clock_pin, "led.spi.mosi_pin": spi.mosi_pin}
        if led.rgb is not None:
            rgb = led.rgb
            used |= {"led.rgb.red": rgb.red, "led.rgb.green": rgb.green, "led.rgb.blue": rgb.blue}
        for key, pin in used.items():
            if pin == ms.pin:
                problems.append(f"mute_switch.pin: pin {ms.pin} is also {key}")
    if ms.active_high and ms.pull_up:
        problems.append(
            "mute_switch.active_high: only with mute_switch.pull_up: false (with the pull-up "
            "the switch pulls the pin low when on)"
        )
    rec = cfg.recordings.dir
    if rec is not None and not rec.startswith("/"):
        problems.append(f"recordings.dir: must be an absolute path (got {rec!r})")
    for f in dataclasses.fields(cfg.sounds.files):
        path = getattr(cfg.sounds.files, f.name)
        if path is None:
            continue
        try:
            load_wav(path)
        except ValueError as exc:
            problems.append(f"sounds.files.{f.name}: {exc}")


def check_wire(cfg: Config, problems: list[str]) -> None:
    """audio.wire: each direction in the dialect's allowed set, its codec library present."""
    from agentd.audio import codecs
    from agentd.realtime import dialects

    wire, dialect = cfg.audio.wire, cfg.api.dialect
    for direction in ("input", "output"):
        fmt = getattr(wire, direction)
        allowed = dialects.WIRE_ALLOWED[dialect][direction]
        if fmt not in allowed:
            problems.append(
                f"audio.wire.{direction}: {fmt} is not spoken by dialect {dialect} "
                f"(allowed: {', '.join(allowed)})"
            )
        elif fmt != "pcm":
            if getattr(cfg.api, f"{direction}_format") is not None:
                problems.append(
                    f"api.{direction}_format: only for audio.wire.{direction}: pcm "
                    f"(got {fmt}; remove api.{direction}_format)"
                )
            if (why := codecs.missing(fmt)) is not None:
                problems.append(f"audio.wire.{direction}: {why}")
    check_echo(cfg, problems)


def check_echo(cfg: Config, problems: list[str]) -> None:
    """The microphone path's processing (issue 22): what the device can do, or why not."""
    from agentd.audio import echo

    if cfg.echo.barge_in == "voice" and cfg.echo.mode != "aec":
        problems.append(
            f"echo.barge_in: voice needs echo.mode: aec (got {cfg.echo.mode}): without an echo "
            "canceller the microphone hears the answer and it interrupts itself; set "
            f"echo.mode: aec ({echo.EXTRA}) or echo.barge_in: button"
        )
    if cfg.api.noise_reduction is not None and cfg.api.dialect != "openai":
        problems.append(
            f"api.noise_reduction: only the OpenAI GA dialect has it (got dialect "
            f"{cfg.api.dialect}); use audio.input.noise_suppression for local noise suppression"
        )
    if not echo.available():
        mic = cfg.audio.input
        wanted = [
            (cfg.echo.mode == "aec", "echo.mode", "aec"),
            (mic.noise_suppression > 0, "audio.input.noise_suppression", mic.noise_suppression),
            (mic.auto_gain > 0, "audio.input.auto_gain", mic.auto_gain),
        ]
        for on, key, value in wanted:
            if on:
                problems.append(
                    f"{key}: {value} needs the WebRTC audio processing library, which is not "
                    f"installed: {echo.EXTRA} (or turn it off)"
                )


AEC_INSTALL = "sudo scripts/install --extras aec"


def echo_build() -> str | None:
    """The installed pywebrtc-audio's version (``0.2.0+agentd.<patch hash>`` for agentd's
    build, plain ``0.2.0`` for PyPI's wheel), or None when it is not installed."""
    import importlib.metadata

    try:
        return importlib.metadata.version("pywebrtc-audio")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_echo_build(cfg: Config, warnings: list[str], lib: Any = None) -> None:
    """``echo.mode: aec`` on a build that takes none of AEC3's config (PyPI's wheel), or on an
    older agentd build without AEC3's linear output: it runs, so a warning, not an error;
    ``lib`` is the native module (default: the installed one)."""
    from agentd.audio import echo

    if cfg.echo.mode != "aec":
        return
    if lib is None:
        if not echo.available():
            return  # check_echo made it an error
        lib = echo.library()
    if not echo.configurable(lib):
        warnings.append(
            f"echo.mode: aec runs on the stock pywebrtc-audio wheel ({echo_build() or 'unknown'}), "
            "which takes none of AEC3's config: the canceller is untuned, so voice barge-in and "
            "double talk are weaker (slower barge-in, the user cut more while the answer plays); "
            f"install agentd's build: {AEC_INSTALL}"
        )
    elif not echo.exports_linear(lib):
        warnings.append(
            f"echo.mode: aec runs on an older build of agentd's pywebrtc-audio "
            f"({echo_build() or 'unknown'}), without AEC3's linear output: voice barge-in hears "
            "only the suppressed signal (slower when the user talks over a loud answer); "
            f"rebuild it: {AEC_INSTALL}"
        )
