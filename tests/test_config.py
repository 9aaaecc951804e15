"""Config: defaults, overlays, placeholders, key sources and errors a person can act on."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentd import config as C
from agentd.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.yaml.example"
ENV = {"OPENAI_API_KEY": "sk-test-0123456789"}


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(C.ConfigError) as info:
        C.load(write(tmp_path, text), ENV if env is None else env)
    return info.value.problems


def test_defaults_match_design() -> None:
    cfg = C.from_mapping({})
    assert cfg.api.dialect == "openai"
    assert cfg.api.api_key_env == "OPENAI_API_KEY"
    assert cfg.api.session_max_s == 3300
    assert cfg.audio.input.rate == 16000 and cfg.audio.input.period_ms == 20
    assert cfg.audio.output.rate == 48000 and cfg.audio.output.buffer_ms == 80
    assert cfg.turn.mode == "push_to_talk" and cfg.turn.detection == "local"
    assert (cfg.turn.max_turn_s, cfg.turn.idle_timeout_s) == (30, 20)
    assert (cfg.vad.aggressiveness, cfg.vad.preroll_ms) == (2, 300)
    assert (cfg.vad.hangover_ms, cfg.vad.min_speech_ms) == (500, 150)
    assert (cfg.echo.mode, cfg.echo.tail_ms, cfg.echo.barge_in) == ("half_duplex", 250, "button")
    assert (cfg.button.pin, cfg.button.pull_up, cfg.button.bounce_ms) == (17, True, 30)
    assert cfg.button.hold_ms == 5000  # a long hold forces a reconnect: longer than a spoken turn
    assert (cfg.led.pin, cfg.led.active_high, cfg.led.brightness) == (25, True, 1.0)
    assert (cfg.sounds.enabled, cfg.sounds.volume) == (True, 0.5)
    assert (cfg.reconnect.initial_s, cfg.reconnect.max_s) == (0.5, 30)
    assert cfg.control.socket == "/run/agentd/control.sock"
    assert (cfg.logging.level, cfg.logging.transcripts) == ("info", False)
    assert cfg.device.user_id == socket.gethostname()
    assert cfg.url == "wss://api.openai.com/v1/realtime"
    assert cfg.api.input_rate == cfg.api.output_rate == 24000


def test_settings_are_frozen() -> None:
    cfg = C.from_mapping({})
    with pytest.raises(AttributeError):
        cfg.api.dialect = "xstar"  # type: ignore[misc]


def test_xstar_rates_and_defaults() -> None:
    cfg = C.from_mapping({"api": {"dialect": "xstar", "input_format": "Raw8KHz16BitMonoPcm"}})
    assert cfg.url == "wss://api.xstar.city/v1/realtime"
    assert cfg.api.input_rate == 8000 and cfg.api.output_rate == 24000


def test_placeholders(tmp_path: Path) -> None:
    cfg = C.from_mapping({"device": {"user_id": "pi-{hostname}-{machine_id}"}})
    assert cfg.device.user_id == f"pi-{socket.gethostname()}-{C._machine_id()}"
    assert "{" not in cfg.device.user_id


def test_overlays_merge_in_name_order(tmp_path: Path) -> None:
    main_file = write(tmp_path, "api:\n  dialect: xstar\n  model: base\nvad:\n  preroll_ms: 200\n")
    write(tmp_path, "api:\n  model: first\n", "config.d/10-fleet.yaml")
    write(
        tmp_path,
        "api:\n  model: qwen-max@DashScope\nvad: {hangover_ms: 700}\n",
        "config.d/20-device.yaml",
    )
    write(tmp_path, "api: {model: ignored}\n", "config.d/README.txt")
    loaded = C.load(main_file, ENV)
    cfg = loaded.config
    assert cfg.api.dialect == "xstar"  # kept from the base: mappings merge deeply
    assert cfg.api.model == "qwen-max@DashScope"  # last file in name order wins
    assert (cfg.vad.preroll_ms, cfg.vad.hangover_ms) == (200, 700)
    assert [p.name for p in loaded.files] == ["config.yaml", "10-fleet.yaml", "20-device.yaml"]


def test_key_sources_in_order_of_preference(tmp_path: Path) -> None:
    keyfile = write(tmp_path, "sk-from-file\n", "key")
    keyfile.chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api_key").write_text("sk-from-credential\n")
    text = f"api:\n  api_key_file: {keyfile}\n  api_key: sk-inline-key\n"
    cfg_file = write(tmp_path, text)
    env = {"OPENAI_API_KEY": "sk-from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    assert C.load(cfg_file, env).api_key.reveal() == "sk-from-env"  # type: ignore[union-attr]
    env.pop("OPENAI_API_KEY")
    loaded = C.load(cfg_file, env)
    assert loaded.api_key.reveal() == "sk-from-file"  # type: ignore[union-attr]
    assert loaded.warnings == ()
    cfg_file = write(tmp_path, "api:\n  api_key: sk-inline-key\n")
    assert C.load(cfg_file, env).api_key.reveal() == "sk-from-credential"  # type: ignore[union-attr]
    loaded = C.load(cfg_file, {})
    assert loaded.api_key.reveal() == "sk-inline-key"  # type: ignore[union-attr]
    assert any("api.api_key: the key is written in the config file" in w for w in loaded.warnings)


def test_world_readable_key_file_warns(tmp_path: Path) -> None:
    keyfile = write(tmp_path, "sk-secret-value\n", "key")
    keyfile.chmod(0o644)
    loaded = C.load(write(tmp_path, f"api:\n  api_key_file: {keyfile}\n"), {})
    assert any("readable by other users" in w and "chmod 600" in w for w in loaded.warnings)
    assert all("sk-secret-value" not in w for w in loaded.warnings)
    assert "sk-secret-value" not in repr(loaded) and "sk-secret-value" not in str(loaded.api_key)


def test_local_simulator_url_needs_no_key(tmp_path: Path) -> None:
    loaded = C.load(write(tmp_path, "api:\n  url: ws://127.0.0.1:8765/v1/realtime\n"), {})
    assert loaded.api_key is None


# Each bad config, with the exact key path (and wording) its message must carry.
BAD_CONFIGS = [
    (
        "api:\n  dialect: azure\n",
        "api.dialect: must be one of openai, xstar, openai-beta (got 'azure')",
    ),
    ("api:\n  dialekt: xstar\n", 'api.dialekt: unknown key (did you mean "dialect"?)'),
    ("api:\n  voice: alloy\n", 'api.voice: unknown key (did you mean "agent.voice"?)'),
    ("vad:\n  aggressiveness: 5\n", "vad.aggressiveness: must be between 0 and 3 (got 5)"),
    ("vad:\n  preroll_ms: lots\n", "vad.preroll_ms: must be a whole number (got 'lots')"),
    ("sounds:\n  enabled: maybe\n", "sounds.enabled: must be true or false (got 'maybe')"),
    (
        "audio:\n  output:\n    volume: 3\n",
        "audio.output.volume: must be between 0 and 2 (got 3.0)",
    ),
    (
        "audio:\n  input:\n    period_ms: 25\n",
        "audio.input.period_ms: must be one of 10, 20, 30 (got 25)",
    ),
    (
        "audio:\n  input:\n    channels: 2\n    channel: 2\n",
        "audio.input.channel: must be less than audio.input.channels=2 (got 2)",
    ),
    ("turn:\n  mode: push-to-talk\n", "turn.mode: must be one of push_to_talk, toggle, hands_free"),
    ("button: 17\n", "button: must be a mapping (got 17)"),
    ("led:\n  rgb: {red: 5, green: 6}\n", "led.rgb.blue: is required here"),
    ("led:\n  rgb: {red: 5, green: 6, blue: 13}\n", "led.rgb: set either led.pin or led.rgb"),
    ("button:\n  pin: 25\n", "button.pin: pin 25 is also used by the LED"),
    (
        "reconnect:\n  initial_s: 60\n  max_s: 10\n",
        "reconnect.initial_s: must not exceed reconnect.max_s=10",
    ),
    (
        "api:\n  input_format: Raw16KHz16BitMonoPcm\n",
        "api.input_format: only used with api.dialect: xstar",
    ),
    ("api:\n  dialect: xstar\n  output_format: MonoMp3\n", "api.output_format: must be one of"),
    ("device:\n  user_id: '{serial}'\n", "device.user_id: unknown placeholder {serial}"),
    ("api:\n  url: https://api.openai.com\n", "api.url: must start with wss:// or ws://"),
    (
        "logging:\n  level: verbose\n",
        "logging.level: must be one of debug, info, warning, error (got 'verbose')",
    ),
    ("api:\n  headers: [a, b]\n", "api.headers: must be a mapping (got ['a', 'b'])"),
    ("control:\n  socket: agentd.sock\n", "control.socket: must be an absolute path"),
    ("- just\n- a list\n", "must hold a mapping of sections (got list)"),
    ("api:\n  dialect: openai\n   model: x\n", "config: YAML syntax error at"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(tmp_path, text)
    assert any(expected in p for p in problems), problems


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "api:\n  dialect: openai\n   model: x\n")
    assert re.search(r"config\.yaml:3:\d+: ", problems[0]), problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path, "vad:\n  aggressiveness: 9\n  hangover_ms: x\nturn:\n  mode: always\nfoo: 1\n"
    )
    assert len(problems) == 4
    assert {p.split(":")[0] for p in problems} == {
        "vad.aggressiveness",
        "vad.hangover_ms",
        "turn.mode",
        "foo",
    }


def test_missing_file_and_missing_key(tmp_path: Path) -> None:
    with pytest.raises(C.ConfigError) as info:
        C.load(tmp_path / "nope.yaml", ENV)
    assert info.value.problems == [f"config: file not found: {tmp_path / 'nope.yaml'}"]
    problems = problems_of(tmp_path, "api: {dialect: xstar}\n", env={})
    assert problems[0].startswith("api.api_key_env: no API key found: $OPENAI_API_KEY is not set")
    problems = problems_of(tmp_path, "api: {api_key_file: /nonexistent/key}\n", env={})
    assert problems[0].startswith("api.api_key_file: cannot read /nonexistent/key")


def test_check_config_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-test-key")
    good = write(tmp_path, "api: {dialect: xstar, model: qwen-max@DashScope}\n")
    assert main(["check-config", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "dialect=xstar model=qwen-max@DashScope" in out and "turn=push_to_talk" in out
    bad = write(tmp_path, "vad: {aggressiveness: 7}\nturn: {mode: x}\n", "bad.yaml")
    assert main(["check-config", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "  vad.aggressiveness: must be between 0 and 3 (got 7)" in err
    assert "sk-cli-test-key" not in out + err


def test_example_passes_check_config() -> None:
    """Runs the installed console script, as a person would."""
    env = dict(os.environ, OPENAI_API_KEY="sk-example")
    agentd = Path(sys.executable).parent / "agentd"
    res = subprocess.run(
        [str(agentd), "check-config", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("OK ")


def test_example_documents_every_key_with_its_default() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    for path, default, doc in C.iter_keys():
        node = data
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"{path} missing from the example"
            node = node[part]
        assert doc, f"{path} has no doc in the schema"
        if default is not None and not isinstance(node, dict):
            assert node == default, f"{path}: example shows {node!r}, default is {default!r}"
        # each leaf key is preceded by a comment line somewhere in its section
    assert text.count("#") > 60
    assert C.from_mapping(data) == C.from_mapping({})


def test_help_for_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ["run", "check-config", "devices", "ctl", "demo", "test-audio"]:
        with pytest.raises(SystemExit) as info:
            main([verb, "--help"])
        assert info.value.code == 0
        assert "usage: agentd " + verb in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("agentd 0.")
