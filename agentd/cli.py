"""`agentd` command line: one verb per job (README "Commands"); heavy imports happen per verb."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agentd import __version__
from agentd.config import DEFAULT_CONFIG_PATH, Config, ConfigError, Loaded, load, show, summary
from agentd.control import COMMANDS, WATCH
from agentd.logs import under_systemd


def _absolute(text: str) -> Path:
    """The daemon must not depend on its working directory (lgpio moves it): resolve now."""
    return Path(text).absolute()


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=_absolute,
        default=DEFAULT_CONFIG_PATH,
        help=f"main config file; config.d/*.yaml beside it overlays it (default {DEFAULT_CONFIG_PATH})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentd",
        description="Voice agent daemon: button + microphone + speaker ↔ realtime speech API.",
    )
    parser.add_argument("--version", action="version", version=f"agentd {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    p = sub.add_parser("run", help="run the daemon (what the systemd service starts)")
    _add_config(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check-config", help="validate the configuration and print a summary")
    _add_config(p)
    p.add_argument(
        "--show",
        action="store_true",
        help="print the effective merged config, each value with the file it came from",
    )
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("devices", help="list ALSA capture and playback devices")
    p.set_defaults(func=_cmd_devices)

    p = sub.add_parser("ctl", help="control a running daemon over its unix socket")
    p.add_argument("--socket", type=Path, default=None, help="control socket path")
    _add_config(p)
    p.add_argument(
        "command",
        choices=[*COMMANDS, WATCH],
        metavar="command",
        help="; ".join(f"{name}: {c.help}" for name, c in COMMANDS.items())
        + f"; {WATCH}: print events as JSON lines until interrupted",
    )
    p.add_argument(
        "arg", nargs="?", default=None, help="volume: N (0..100), up or down; say/ask: the text"
    )
    p.add_argument(
        "--interrupt", action="store_true", help="say/ask: cut off what is going on, do not wait"
    )
    p.set_defaults(func=_cmd_ctl)

    p = sub.add_parser("demo", help="run the real daemon against the bundled simulator")
    p.add_argument("--text", default=None, help="what the scripted user says (espeak-ng)")
    p.add_argument(
        "--sound-card",
        choices=["auto", "yes", "no"],
        default="auto",
        help="use the default ALSA devices (auto: when a sound card exists)",
    )
    p.add_argument(
        "--wake-word",
        action="store_true",
        help="hands-free: the scripted user says 'okay nabu' first (needs agentd[wake])",
    )
    p.add_argument(
        "--wire",
        choices=["pcm", "opus", "mp3", "g711_ulaw", "g711_alaw"],
        default="pcm",
        help="audio format on the wire (opus/mp3: the xstar dialect; g711: openai)",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("test-audio", help="record, report levels per channel, play it back")
    _add_config(p)
    p.add_argument("--seconds", type=float, default=3.0, help="how long to record")
    p.set_defaults(func=_cmd_test_audio)
    return parser


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.config, unreadable_key_ok=True)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    from agentd.device.volume import check_mixer

    mixer = check_mixer(loaded.config.audio.output)
    if mixer is not None:
        print(f"{args.config}: 1 problem(s):\n  {mixer}", file=sys.stderr)
        return 1
    if args.show:
        print(show(loaded))
        return 0
    print(
        f"OK {args.config}: {summary(loaded.config)}; api key: {_key_source(loaded)}"
        + _echo_build(loaded.config)
    )
    if loaded.config.hardware is not None:
        print(preset_expansion(loaded))
    return 0


def _echo_build(cfg: Config) -> str:
    """Which AEC3 build `echo.mode: aec` runs on (agentd's carries ``+agentd.<patch hash>``)."""
    from agentd.config.validate import echo_build

    version = echo_build() if cfg.echo.mode == "aec" else None
    return f"; aec: pywebrtc-audio {version}" if version is not None else ""


def preset_expansion(loaded: Loaded) -> str:
    """What ``hardware:`` expanded to, key by key, and which of its keys the files override."""
    from agentd.config.loading import origin_of
    from agentd.device import presets

    name = loaded.config.hardware
    assert name is not None
    lines = [f"hardware: {name} sets (your own keys win):"]
    for key, value in presets.flatten(presets.PRESETS[name]):
        where = origin_of(key, loaded.origins)
        mine = where is not None and str(where) != presets.source(name)
        shown = json.dumps(value)
        lines.append(f"  {key}: {shown}" + (f"  (overridden in {where})" if mine else ""))
    return "\n".join(lines)


def _key_source(loaded: Loaded) -> str:
    """Which key the daemon would use, never the key itself."""
    key = loaded.api_key
    if key is None:
        unread = any(w.startswith("api key: ") for w in loaded.warnings)
        return "not checked (see the warning)" if unread else "none needed (local server)"
    if key.source.startswith("$") and not under_systemd():
        return f"{key.source} (from this shell: the service does not inherit it)"
    return key.source


def _cmd_devices(args: argparse.Namespace) -> int:
    from agentd.audio.devices import describe_devices

    print(describe_devices())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from agentd.service import run_main

    return run_main(args.config)


def _cmd_ctl(args: argparse.Namespace) -> int:
    from agentd.control import ctl_main

    return ctl_main(
        args.command,
        socket_path=args.socket,
        config_path=args.config,
        value=args.arg if args.command not in ("say", "ask") else None,
        text=args.arg if args.command in ("say", "ask") else None,
        interrupt=args.interrupt,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from agentd.demo import demo_main

    return demo_main(
        text=args.text, sound_card=args.sound_card, wake_word=args.wake_word, wire=args.wire
    )


def _cmd_test_audio(args: argparse.Namespace) -> int:
    from agentd.audio.diag import test_audio_main

    return test_audio_main(args.config, seconds=args.seconds)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
