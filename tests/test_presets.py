"""HAT presets (issue 24, point 1): `hardware:` sets the button, LED and sound card keys as a
layer under the owner's files, every value can be overridden, check-config prints the
expansion, and the README's snippet for each preset loads as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agentd.audio.devices import Card, format_devices
from agentd.cli import main
from agentd.config import ConfigError, from_mapping, led_config, load
from agentd.device import presets

README = Path(__file__).resolve().parents[1] / "README.md"


def write(tmp: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def readme_snippets() -> dict[str, str]:
    """preset → the YAML block under its README section (### Voice HAT: <name> …)."""
    text = README.read_text()
    out = {}
    for name in presets.PRESETS:
        m = re.search(rf"^#### .*`hardware: {name}`.*?```yaml\n(.*?)```", text, re.M | re.S)
        assert m, f"README has no section with a config snippet for hardware: {name}"
        out[name] = m.group(1)
    return out


@pytest.mark.parametrize(
    ("name", "button", "device", "channels", "led"),
    [
        ("respeaker-2mic", 17, "plughw:CARD=seeed2micvoicec,DEV=0", 2, "apa102"),
        ("voice-bonnet", 17, "plughw:CARD=wm8960soundcard,DEV=0", 2, "apa102"),
        ("aiy-voice", 23, "plughw:CARD=sndrpigooglevoi,DEV=0", 2, "gpio"),
        ("usb-speakerphone", None, "plughw:CARD=Device,DEV=0", 1, "gpio"),
    ],
)
def test_each_preset_sets_its_board(
    tmp_path: Path, name: str, button: int | None, device: str, channels: int, led: str
) -> None:
    cfg = load(write(tmp_path, f"hardware: {name}\n"), require_key=False).config
    assert cfg.hardware == name
    assert cfg.button.pin == button
    assert cfg.audio.input.device == cfg.audio.output.device == device
    assert cfg.audio.input.channels == channels and cfg.audio.input.channel == 0
    assert cfg.led.kind == led
    if name == "respeaker-2mic":
        assert (cfg.led.count, cfg.led.spi.bus, cfg.led.spi.device, cfg.led.pin) == (3, 0, 1, None)
    if name == "voice-bonnet":
        assert (cfg.led.spi.clock_pin, cfg.led.spi.mosi_pin) == (6, 5)
    if name == "aiy-voice":
        assert cfg.led.pin == 25 and cfg.audio.output.mixer is None  # no mixer on that codec


def test_without_a_preset_nothing_changes(tmp_path: Path) -> None:
    assert load(write(tmp_path, "{}\n"), require_key=False).config == from_mapping({})


def test_own_keys_override_the_preset_in_the_main_file_and_in_overlays(tmp_path: Path) -> None:
    main_file = write(
        tmp_path,
        "hardware: respeaker-2mic\nbutton: {pin: 5}\naudio: {input: {channel: 1}}\n",
    )
    site = write(tmp_path, "led: {count: 12, colors: {listening: '#ff8000'}}\n", "config.d/1.yaml")
    loaded = load(main_file, require_key=False)
    cfg = loaded.config
    assert cfg.button.pin == 5 and cfg.button.pull_up is True  # the rest of the preset stays
    assert cfg.audio.input.channel == 1 and cfg.audio.input.channels == 2
    assert cfg.led.count == 12 and cfg.led.kind == "apa102" and cfg.led.spi.device == 1
    assert loaded.origins["button.pin"] == main_file
    assert loaded.origins["led.count"] == site
    assert str(loaded.origins["led.kind"]) == "hardware: respeaker-2mic"
    # the preset's LED kind and button can be replaced and removed
    (tmp_path / "c").mkdir()
    plain = write(
        tmp_path / "c",
        "hardware: respeaker-2mic\nled: {kind: gpio, pin: 25}\nbutton: {pin: null}\n",
    )
    cfg = load(plain, require_key=False).config
    assert (cfg.led.kind, cfg.led.pin, cfg.button.pin) == ("gpio", 25, None)
    # a preset named in an overlay applies too
    other = tmp_path / "b"
    write(other, "hardware: aiy-voice\n", "config.d/10-hat.yaml")
    assert load(write(other, "{}\n"), require_key=False).config.button.pin == 23


def test_check_config_prints_the_expansion_and_show_names_the_preset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = write(
        tmp_path,
        "api: {url: 'ws://127.0.0.1:9/'}\nhardware: voice-bonnet\nbutton: {pin: 27}\n",
    )
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hardware: voice-bonnet sets (your own keys win):" in out
    assert '  led.kind: "apa102"' in out
    assert '  audio.input.device: "plughw:CARD=wm8960soundcard,DEV=0"' in out
    assert f"  button.pin: 17  (overridden in {path})" in out
    assert main(["check-config", "--config", str(path), "--show"]) == 0
    shown = capsys.readouterr().out
    kind = next(ln for ln in shown.splitlines() if ln.strip().startswith("kind: apa102"))
    assert kind.endswith("# hardware: voice-bonnet")
    pin = next(ln for ln in shown.splitlines() if ln.strip().startswith("pin: 27"))
    assert pin.endswith(f"# {path}")


def test_a_bad_preset_name_and_a_contradiction_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as bad:
        load(write(tmp_path, "hardware: respeaker\n"), require_key=False)
    assert "hardware: must be one of respeaker-2mic, voice-bonnet, aiy-voice" in str(bad.value)
    with pytest.raises(ConfigError) as both:
        load(write(tmp_path, "hardware: respeaker-2mic\nled: {pin: 25}\n"), require_key=False)
    assert str(both.value) == (
        "led.pin: not used with led.kind: apa102 (hardware: respeaker-2mic sets led.kind: "
        "apa102); set led.pin: null, or led.kind: gpio"
    )


def test_the_error_blink_uses_the_presets_led(tmp_path: Path) -> None:
    """A config error before start blinks on the LED the preset names (issue 8's blink)."""
    cfg = led_config(write(tmp_path, "hardware: respeaker-2mic\nvad: {nope: 1}\n"))
    assert cfg is not None and cfg.led.kind == "apa102"


def test_the_readme_snippet_for_each_preset_loads(tmp_path: Path) -> None:
    for name, snippet in readme_snippets().items():
        data = yaml.safe_load(snippet)
        assert data["hardware"] == name
        cfg = load(write(tmp_path, snippet, f"{name}.yaml"), require_key=False).config
        assert cfg.hardware == name


def test_devices_names_the_preset_of_a_hat_card() -> None:
    cards = [Card(0, "seeed2micvoicec", "seeed-2mic-voicecard", "seeed-2mic-voicecard")]
    text = format_devices(cards, {"capture": ["hw:CARD=seeed2micvoicec,DEV=0"]})
    assert "plughw:CARD=seeed2micvoicec,DEV=0" in text
    assert "hardware: respeaker-2mic" in text


def test_the_readme_shows_what_agentd_devices_prints_for_each_preset() -> None:
    """The `agentd devices` block under each preset is the real output for that card."""
    text = README.read_text()
    for name in presets.PRESETS:
        section = re.search(rf"^#### .*`hardware: {name}`(.*?)^###", text, re.M | re.S)
        assert section, name
        block = re.search(r"```\n(Sound cards: .*?)\n```", section.group(1), re.S)
        assert block, f"no `agentd devices` output under hardware: {name}"
        shown = block.group(1)
        card_id = re.match(r"Sound cards: (\S+)", shown).group(1)  # type: ignore[union-attr]
        desc = re.search(rf"plughw:CARD={card_id},DEV=0  (.+)", shown).group(1)  # type: ignore[union-attr]
        hw = [f"hw:CARD={card_id},DEV=0"]
        real = format_devices([Card(1, card_id, desc, desc)], {"capture": hw, "playback": hw})
        assert shown == real, name
        assert card_id in presets.PRESETS[name]["audio"]["input"]["device"]
