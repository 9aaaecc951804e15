"""Config: defaults, overlays, placeholders, key sources and errors a person can act on."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentd import config as C
from agentd.cli import main
from agentd.config import placeholders, schema, validate
from agentd.realtime import dialects

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
    assert (cfg.vad.hangover_ms, cfg.vad.min_speech_ms) == (240, 150)  # issue 25: was 500
    assert cfg.vad.adaptive_hangover and cfg.turn.server_detector == "server_vad"
    assert (cfg.echo.mode, cfg.echo.tail_ms, cfg.echo.barge_in) == ("half_duplex", 250, "button")
    assert (cfg.button.pin, cfg.button.pull_up, cfg.button.bounce_ms) == (17, True, 30)
    assert cfg.button.hold_ms == 5000  # a long hold forces a reconnect: longer than a spoken turn
    assert (cfg.led.pin, cfg.led.active_high, cfg.led.brightness) == (25, True, 1.0)
    assert (cfg.sounds.enabled, cfg.sounds.volume) == (True, 0.5)
    assert (cfg.reconnect.initial_s, cfg.reconnect.max_s) == (0.5, 30)
    assert cfg.control.socket == "/run/agentd/control.sock"
    assert (cfg.logging.level, cfg.logging.transcripts) == ("info", False)
    assert cfg.device.user_id == socket.gethostname()
    assert dialects.url(cfg.api) == "wss://api.openai.com/v1/realtime"
    assert dialects.input_rate(cfg.api) == dialects.output_rate(cfg.api) == 24000


def test_settings_are_frozen() -> None:
    cfg = C.from_mapping({})
    with pytest.raises(AttributeError):
        cfg.api.dialect = "xstar"  # type: ignore[misc]


def test_xstar_rates_and_defaults() -> None:
    cfg = C.from_mapping({"api": {"dialect": "xstar", "input_format": "Raw8KHz16BitMonoPcm"}})
    assert dialects.url(cfg.api) == "wss://api.xstar.city/v1/realtime"
    assert dialects.input_rate(cfg.api) == 8000 and dialects.output_rate(cfg.api) == 24000


def test_placeholders(tmp_path: Path) -> None:
    cfg = C.from_mapping({"device": {"user_id": "pi-{hostname}-{machine_id}"}})
    assert cfg.device.user_id == f"pi-{socket.gethostname()}-{placeholders.machine_id()}"
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
    ("turn:\n  response_timeout_s: 1\n", "turn.response_timeout_s: must be between 3 and 300"),
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
    # PyYAML alone keeps the later of two keys and drops the first without a word
    (
        "echo:\n  mode: aec\nturn:\n  mode: hands_free\necho:\n  tail_ms: 300\n",
        "config.yaml:5:1: 'echo' is given twice in one mapping (first at line 1)",
    ),
    (
        "echo:\n  mode: aec\n  tail_ms: 300\n  mode: half_duplex\n",
        "config.yaml:4:3: 'mode' is given twice in one mapping (first at line 2)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(tmp_path, text)
    assert any(expected in p for p in problems), problems


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    """Duplicate keys are refused, but a ``<<`` merge and a key written beside it are not a
    duplicate: the written key wins, as YAML says."""
    text = "x-echo: &e\n  mode: aec\n  tail_ms: 300\necho:\n  <<: *e\n  mode: half_duplex\n"
    problems = problems_of(tmp_path, text)  # (x-echo is no section of agentd's)
    assert not any("twice" in p for p in problems), problems
    assert any("x-echo" in p for p in problems), problems


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


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a schema class (read as Sphinx reads attribute
    docs: the string expression right after the annotated assignment)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = after.value.value
    return docs


def iter_keys(cls: type = C.Config, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """Every key of the schema as (path, default, doc); sections (led.rgb too) are yielded
    before their keys, with no default."""
    docs = field_docs(cls)
    for name, (f, tp) in validate.fields(cls).items():
        path = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):  # optional sections (led.rgb) are leaves here
            yield path, None, docs.get(name, "")
            yield from iter_keys(tp, path + ".")  # type: ignore[arg-type]
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            yield path, default, docs.get(name, "")


def test_every_schema_field_has_a_doc_naming_its_unit() -> None:
    """wyoming-satellite's settings.py style: a docstring under each field; durations and
    rates say their unit, so `tail_ms: 250` is never read as seconds."""
    units = {"_ms": "millisecond", "_s": "second", "rate": "Hz"}
    for path, _, doc in iter_keys():
        assert doc.strip(), f"{path} has no docstring in agentd/config/schema.py"
        for suffix, unit in units.items():
            if path.endswith(suffix):
                assert unit in doc, f"{path}: its doc does not name the unit ({unit}): {doc!r}"
    assert (
        field_docs(schema.VadSettings)["hangover_ms"] == "Silence that ends speech (milliseconds)."
    )


def test_schema_is_data_only() -> None:
    """Settings hold values; what the daemon derives from them (URLs, rates, the summary)
    lives with the code that uses it."""
    for _, cls in inspect.getmembers(schema, inspect.isclass):
        if cls.__module__ != schema.__name__:
            continue
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        own = {
            k
            for k, v in vars(cls).items()
            if not k.startswith("__") and (callable(v) or isinstance(v, property))
        }
        assert not own, f"{cls.__name__} has behaviour: {own}"


def test_example_documents_every_key_with_its_default() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    for path, default, doc in iter_keys():
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


def _readme_section(heading: str, next_heading: str) -> str:
    """README.md from its ``## heading`` to the next one's."""
    text = (ROOT / "README.md").read_text()
    return text[text.index(f"\n## {heading}\n") : text.index(f"\n## {next_heading}\n")]


def test_the_readme_config_reference_names_each_key_once_and_only_real_ones() -> None:
    """README's Configuration table: a key in two rows (a merge left `turn.mode` and the echo
    keys twice, the older row stale) or a key the schema lacks misleads the one reading it."""
    section = _readme_section("Configuration", "Tools")
    keys = [
        k
        for row in section.splitlines()
        if row.startswith("| `")
        for k in re.findall(r"`([a-z_.*]+)`", row.split(" | ")[0])
    ]
    assert len(keys) > 40, keys
    twice = sorted({k for k in keys if keys.count(k) > 1})
    assert not twice, f"named in two rows of README's config reference: {twice}"
    real = {path for path, _, _ in iter_keys()}
    unknown = [k for k in keys if k.removesuffix(".*") not in real]
    assert not unknown, f"README's config reference names keys the schema lacks: {unknown}"


def test_the_readme_commands_table_shows_every_verb_once_and_every_control_command() -> None:
    """README's Commands table: each verb of the CLI in one row (a merge left `agentd demo`
    twice, one row without its options), `ctl`'s rows naming every control command."""
    import argparse

    from agentd.cli import build_parser
    from agentd.control import COMMANDS, WATCH

    section = _readme_section("Commands", "Configuration")
    rows = [row.split(" | ")[0] for row in section.splitlines() if row.startswith("| `agentd ")]
    verbs = [re.match(r"\| `agentd ([a-z-]+)", row).group(1) for row in rows]  # type: ignore[union-attr]
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(set(verbs)) == sorted(sub.choices), (verbs, list(sub.choices))
    twice = sorted({v for v in verbs if verbs.count(v) > 1 and v != "ctl"})
    assert not twice, f"in two rows of README's Commands table: {twice}"
    ctl = " ".join(row for row, verb in zip(rows, verbs, strict=True) if verb == "ctl")
    named = set(re.findall(r"[a-z]+", ctl))
    # (subscribe is what `ctl watch` sends)
    missing = sorted((set(COMMANDS) - {"subscribe"} | {WATCH}) - named)
    assert not missing, f"control commands README's Commands table lacks: {missing}"


def test_help_for_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ["run", "check-config", "devices", "ctl", "demo", "test-audio"]:
        with pytest.raises(SystemExit) as info:
            main([verb, "--help"])
        assert info.value.code == 0
        assert "usage: agentd " + verb in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("agentd 0.")


# ------------------------------------------------------------------ overlays name their file


def test_overlay_errors_name_their_file(tmp_path: Path) -> None:
    main_file = write(tmp_path, "vad:\n  preroll_ms: 200\nturn: {mode: sometimes}\n")
    site = write(tmp_path, "vad:\n  agressiveness: 3\n", "config.d/10-site.yaml")
    dev = write(tmp_path, "audio:\n  input: {channels: 2, channel: 2}\n", "config.d/20-device.yaml")
    with pytest.raises(C.ConfigError) as info:
        C.load(main_file, ENV)
    problems = info.value.problems
    assert f'{site}: vad.agressiveness: unknown key (did you mean "aggressiveness"?)' in problems
    # the main file's own problem keeps the plain `key.path: …` (check-config names the file)
    assert any(p.startswith("turn.mode: must be one of") for p in problems), problems
    assert len(problems) == 2
    main_file.write_text("{}\n")
    site.unlink()
    problems = problems_of_file(main_file)  # a rule across keys: named where the value came from
    assert problems == [
        f"{dev}: audio.input.channel: must be less than audio.input.channels=2 (got 2)"
    ]


def test_overlay_replacing_a_value_takes_the_blame(tmp_path: Path) -> None:
    main_file = write(tmp_path, "vad: {hangover_ms: 50}\n")
    fix = write(tmp_path, "vad: {hangover_ms: 9999999}\n", "config.d/50-fix.yaml")
    problems = problems_of_file(main_file)
    assert problems == [f"{fix}: vad.hangover_ms: must be between 100 and 5000 (got 9999999)"]


def problems_of_file(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(C.ConfigError) as info:
        C.load(path, ENV if env is None else env)
    return info.value.problems


def test_check_config_prints_overlay_file_in_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main_file = write(tmp_path, "{}\n")
    site = write(tmp_path, "vad:\n  agressiveness: 3\n", "config.d/10-site.yaml")
    assert main(["check-config", "--config", str(main_file)]) == 1
    assert f"  {site}: vad.agressiveness: unknown key" in capsys.readouterr().err


# ------------------------------------------------------------------ check-config --show


def test_show_prints_each_value_with_its_file_and_redacts_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    main_file = write(
        tmp_path,
        "api:\n  api_key: sk-inline-secret-123\n  headers: {X-Tenant: tenant-secret-456}\n"
        "vad: {preroll_ms: 200}\n",
    )
    site = write(tmp_path, "vad: {hangover_ms: 700}\nled: {pin: null}\n", "config.d/10-site.yaml")
    assert main(["check-config", "--config", str(main_file), "--show"]) == 0
    out = capsys.readouterr().out
    lines = {  # the first line of each text wins (mute_switch.pin: null comes after led.pin)
        ln.split("#")[0].strip(): ln.rsplit("# ", 1)[-1]
        for ln in reversed(out.splitlines())
        if "#" in ln
    }
    assert lines["preroll_ms: 200"] == str(main_file)
    assert lines["hangover_ms: 700"] == str(site)
    assert lines["pin: null"] == str(site)  # led.pin
    assert lines["aggressiveness: 2"] == "default"
    assert lines["api_key: '***'"] == str(main_file)
    assert lines["X-Tenant: '***'"] == str(main_file)
    assert "sk-inline-secret-123" not in out and "tenant-secret-456" not in out
    assert out.splitlines()[-1] == "# api key: api.api_key in the config file"
    # the output is the effective config: it loads back to the same settings
    shown = yaml.safe_load(out)
    shown["api"]["api_key"], shown["api"]["headers"]["X-Tenant"] = (
        "sk-inline-secret-123",
        "tenant-secret-456",
    )
    assert C.from_mapping(shown) == C.load(main_file, {}).config


# ------------------------------------------------------------------ where the key comes from


def test_check_config_names_the_key_source_never_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret-0001")
    good = write(tmp_path, "api: {dialect: openai}\n")
    assert main(["check-config", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "api key: $OPENAI_API_KEY (from this shell" in out
    keyfile = write(tmp_path, "sk-file-secret-0002\n", "key")
    keyfile.chmod(0o600)
    monkeypatch.delenv("OPENAI_API_KEY")
    with_file = write(tmp_path, f"api: {{api_key_file: {keyfile}}}\n", "f.yaml")
    assert main(["check-config", "--config", str(with_file)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"api key: {keyfile}")
    assert "secret" not in out


def test_the_units_credential_file_is_read_where_the_service_would(tmp_path: Path) -> None:
    """Outside systemd (check-config over SSH, a run by hand) the file LoadCredential= names
    is read directly; under the unit $CREDENTIALS_DIRECTORY/api_key is."""
    cfg = write(tmp_path, "api: {dialect: openai}\n")
    cred = write(tmp_path, "sk-cred-secret-0003\n", "etc/api_key")
    loaded = C.load(cfg, {}, unit_credential=cred)
    assert loaded.api_key is not None and loaded.api_key.reveal() == "sk-cred-secret-0003"
    assert loaded.api_key.source == f"{cred} (the unit's LoadCredential=api_key)"
    cred.write_text("")  # as scripts/install leaves it
    problems = problems_of_file_cred(cfg, {}, cred)
    assert problems == [
        f"api.api_key_env: no API key: {cred} is empty; put your key in it (sudo nano {cred})"
    ]
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api_key").write_text("\n")
    problems = problems_of_file_cred(cfg, {"CREDENTIALS_DIRECTORY": str(creds)}, cred)
    assert problems[0].startswith(f"api.api_key_env: no API key: {cred} is empty")
    (tmp_path / "etc" / "api_key").unlink()
    problems = problems_of_file_cred(cfg, {}, cred)
    assert problems[0].startswith("api.api_key_env: no API key found: $OPENAI_API_KEY is not set")


def problems_of_file_cred(cfg: Path, env: dict[str, str], cred: Path) -> list[str]:
    with pytest.raises(C.ConfigError) as info:
        C.load(cfg, env, unit_credential=cred)
    return info.value.problems


def test_relative_key_file_is_an_error(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "api: {api_key_file: secrets/key}\n")
    assert problems == [
        "api.api_key_file: must be an absolute path (got 'secrets/key'); the service runs in /"
    ]


# ------------------------------------------------------------------ exit 78 and the LED


def test_run_with_a_bad_config_exits_78_with_one_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "vad: {aggressiveness: 9}\nturn: {mode: always}\n")
    out = subprocess.run(
        [sys.executable, "-m", "agentd", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENAI_API_KEY": "sk-x-123456"},
    )
    assert out.returncode == 78, out
    lines = out.stderr.splitlines()
    assert len(lines) == 1, lines
    assert f"agentd not started: {bad}: vad.aggressiveness: must be between 0 and 3" in lines[0]
    assert "; turn.mode: must be one of" in lines[0] and "check-config" in lines[0]


def test_led_shows_the_error_before_exit_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LED the owner wired (led.pin from the file, even though another key is bad) blinks
    the error pattern before `agentd run` exits; an invalid led section is never driven."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from agentd.device import gpio
    from agentd.service import EX_CONFIG, Hooks, run_main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(gpio, "ERROR_BLINKS", 1)
    bad = write(tmp_path, "led: {pin: 5}\nvad: {aggressiveness: 9}\n")
    factory = MockFactory(pin_class=MockPWMPin)
    try:
        assert run_main(bad, Hooks(pin_factory=factory)) == EX_CONFIG
        levels = [s.state for s in factory.pin(5).states]
        # three fast blinks: on/off each, then off
        assert levels.count(1) >= 3 and levels[-1] == 0, levels
        assert len(factory.pin(25).states) == 1  # the default pin was never touched
        factory.reset()
        worse = write(tmp_path, "led: {pin: 99}\napi: {url: wss://example.org}\n", "w.yaml")
        assert run_main(worse, Hooks(pin_factory=factory)) == EX_CONFIG
        assert not factory.pins  # no valid LED setting: nothing driven
        factory.reset()
        # an empty key file, as right after scripts/install (named in the file, so that a
        # readable /etc/agentd/api_key on the machine running the tests cannot stand in for it)
        (tmp_path / "api_key").write_text("")
        (tmp_path / "api_key").chmod(0o600)
        no_key = write(
            tmp_path, f"led: {{pin: 6}}\napi: {{api_key_file: {tmp_path}/api_key}}\n", "k.yaml"
        )
        assert run_main(no_key, Hooks(pin_factory=factory)) == EX_CONFIG
        assert [s.state for s in factory.pin(6).states].count(1) >= 3
    finally:
        factory.reset()


# ------------------------------------------------------------------ every key does something

#: The one module of the agentd.config package that uses settings (the key lookup and its
#: redaction); schema, validate, loading, placeholders and show only define, check or print them.
CONFIG_PKG_USERS = {"secrets.py"}


def settings_classes() -> dict[str, str]:
    """Settings class name → the section path it sits at (ButtonSettings → button)."""
    out: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        out[cls.__name__] = prefix.rstrip(".")
        for name, (_, tp) in validate.fields(cls).items():
            inner = validate.strip_optional(tp)
            if dataclasses.is_dataclass(inner):
                walk(inner, f"{prefix}{name}.")  # type: ignore[arg-type]

    walk(C.Config, "")
    return out


def reads_in(source: str, skip_functions: frozenset[str] = frozenset()) -> set[str]:
    """Dotted keys read in ``source``: an attribute access on an expression known to be a
    settings object, i.e. reached through its section name (``cfg.button.hold_ms``), a local
    assigned from one (``b = self.cfg.button``; ``b.hold_ms``), or a parameter or ``self.``
    attribute of its class (``settings: OutputSettings``; ``self.settings.volume``). Names
    are scoped per function, ``self.`` attributes per class."""
    classes = settings_classes()
    by_segment = {path.rsplit(".", 1)[-1]: cls for cls, path in classes.items() if path}
    fields = {cls: set(validate.fields(getattr(schema, cls))) for cls in classes}
    tree = ast.parse(source)

    def annotated(ann: ast.AST | None) -> str | None:
        text = ast.unparse(ann) if ann is not None else ""
        return next((c for c in classes if re.search(rf"\b{c}\b", text)), None)

    def class_of(expr: ast.AST, typed: dict[str, str]) -> str | None:
        if isinstance(expr, ast.Attribute):
            if isinstance(expr.value, ast.Name) and f"{expr.value.id}.{expr.attr}" in typed:
                return typed[f"{expr.value.id}.{expr.attr}"]
            return by_segment.get(expr.attr)
        if isinstance(expr, ast.Name):
            return typed.get(expr.id)
        return None

    def name_of(expr: ast.AST) -> str:
        if isinstance(expr, ast.Name):
            return expr.id
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            return f"{expr.value.id}.{expr.attr}"
        return ""

    def local_types(fn: ast.AST, inherited: dict[str, str]) -> dict[str, str]:
        typed = dict(inherited)
        for _ in range(3):  # aliases of aliases
            for node in ast.walk(fn):
                if isinstance(node, ast.arg) and annotated(node.annotation):
                    typed[node.arg] = annotated(node.annotation)  # type: ignore[assignment]
                elif isinstance(node, ast.AnnAssign) and annotated(node.annotation):
                    typed[name_of(node.target)] = annotated(node.annotation)  # type: ignore[assignment]
                elif isinstance(node, ast.Assign):
                    pairs: list[tuple[ast.AST, ast.AST]] = []
                    for target in node.targets:
                        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                            pairs += zip(target.elts, node.value.elts, strict=False)
                        else:
                            pairs.append((target, node.value))
                    for target, value in pairs:
                        cls = class_of(value, typed)
                        if cls is not None and name_of(target):
                            typed[name_of(target)] = cls
        return typed

    found: set[str] = set()

    def reads(fn: ast.AST, typed: dict[str, str]) -> None:
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name in skip_functions:
            return
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute):
                cls = class_of(node.value, typed)
                if cls is not None and node.attr in fields[cls]:
                    found.add(f"{classes[cls]}.{node.attr}".lstrip("."))

    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for top in tree.body:
        if isinstance(top, ast.ClassDef):
            methods = [n for n in top.body if isinstance(n, functions)]
            attrs: dict[str, str] = {}
            for n in top.body:  # class-level annotations: `settings: OutputSettings`
                if isinstance(n, ast.AnnAssign) and annotated(n.annotation):
                    attrs[f"self.{name_of(n.target)}"] = annotated(n.annotation)  # type: ignore[assignment]
            for m in methods:
                attrs |= {k: v for k, v in local_types(m, {}).items() if k.startswith("self.")}
            for m in methods:
                reads(m, local_types(m, attrs))
        elif isinstance(top, functions):
            reads(top, local_types(top, {}))
    return found


def test_the_key_reader_finds_reads_and_misses() -> None:
    """The checker below can fail: an unread key is reported, aliases are followed."""
    source = (
        "class A:\n"
        "    def __init__(self, s: OutputSettings):\n"
        "        self.s = s\n"
        "    def f(self):\n"
        "        b, led = self.cfg.button, self.cfg.led\n"
        "        return b.hold_ms, led.rgb.red, self.s.volume, self.cfg.sounds.enabled\n"
        "class B:\n"
        "    def __init__(self, s: InputSettings):\n"
        "        self.s = s\n"
        "    def g(self):\n"
        "        return self.s.rate\n"
        "def check(cfg):\n"
        "    return cfg.vad.aggressiveness\n"
    )
    found = reads_in(source, frozenset({"check"}))
    assert {"button.hold_ms", "led.rgb", "led.rgb.red", "audio.output.volume"} <= found
    assert {"sounds.enabled", "audio.input.rate"} <= found
    assert "vad.aggressiveness" not in found  # only validated: does not count
    assert "sounds.volume" not in found  # audio.output.volume is another key
    assert "audio.output.rate" not in found  # B's self.s is an InputSettings


def test_every_documented_key_is_read_by_the_daemon() -> None:
    """Walks the schema: every key must be used by code outside validation and printing, or
    it is a setting that does nothing (button.hold_ms was one)."""
    found: set[str] = set()
    for path in sorted((ROOT / "agentd").rglob("*.py")):
        if "sim" in path.relative_to(ROOT / "agentd").parts:
            continue  # the simulator is not the daemon
        if path.parent.name == "config" and path.name not in CONFIG_PKG_USERS:
            continue
        found |= reads_in(path.read_text())
    keys = [p for p, _, _ in iter_keys() if p not in settings_classes().values() or p == "led.rgb"]
    found.add("hardware")  # the preset layer loading.py applies (tests/test_presets.py)
    unread = [k for k in keys if k not in found]
    assert not unread, f"documented keys no code reads: {unread}"
