"""Volume (issue 24, point 3) on a real ALSA mixer: the PulseAudio room's speaker `spk` has a
control device (`ctl.spk`, the ALSA pulse plugin) whose "Master" is the room sink's volume,
read back with pactl. Software gain only where there is no mixer."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd import control
from agentd.cli import main
from agentd.config import OutputSettings
from agentd.device.volume import Volume, control_device, parse_level
from agentd.state import Persisted, state_dir
from tests import rigs
from tests.harness import Harness


def sink_volume() -> int:
    out = subprocess.run(
        ["pactl", f"--server=unix:{rigs.PULSE_SOCKET}", "get-sink-volume", "room"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    levels = [int(x) for x in re.findall(r"(\d+)%", out)]
    assert levels, out
    return round(sum(levels) / len(levels))


def set_sink_volume(percent: int) -> None:
    subprocess.run(
        ["pactl", f"--server=unix:{rigs.PULSE_SOCKET}", "set-sink-volume", "room", f"{percent}%"],
        check=True,
    )


@pytest.fixture
def full_room(room: rigs.PulseRoom) -> Iterator[rigs.PulseRoom]:
    """The room at 100% before and after: other tests measure levels in it."""
    set_sink_volume(100)
    yield room
    set_sink_volume(100)


def test_levels_and_control_names() -> None:
    assert [parse_level(a, 50) for a in ("0", "100", "up", "down", "+5", "-70", " 42 ")] == [
        0,
        100,
        60,
        40,
        55,
        0,
        42,
    ]
    with pytest.raises(ValueError, match=r"volume must be 0\.\.100, up or down"):
        parse_level("loud", 50)
    with pytest.raises(ValueError, match=r"volume must be 0..100 \(got 150\)"):
        parse_level("150", 50)
    assert control_device("plughw:CARD=seeed2micvoicec,DEV=0") == "hw:CARD=seeed2micvoicec"
    assert control_device("spk") == "spk"


def test_the_mixer_is_found_and_a_saved_level_is_put_back(full_room: rigs.PulseRoom) -> None:
    v = Volume(OutputSettings(device="spk"))
    assert (v.control, v.level, v.gain) == ("Master", 100, 1.0)
    v.set(35)
    assert sink_volume() == 35
    v.close()
    again = Volume(OutputSettings(device="spk"), saved=70)  # after a restart
    assert sink_volume() == 70 and again.level == 70 and again.gain == 1.0
    again.close()


def test_without_a_mixer_the_volume_is_a_software_gain(full_room: rigs.PulseRoom) -> None:
    v = Volume(OutputSettings(device="spk", mixer=None), saved=40)
    assert v.control is None and v.gain == 0.4 and v.describe() == "software gain"
    assert sink_volume() == 100  # the card's own volume is left alone
    none = Volume(OutputSettings(device="testplay"))  # a PCM with no control device
    assert none.control is None and none.gain == 1.0 and none.problem


def test_check_config_refuses_a_mixer_control_the_card_lacks(
    full_room: rigs.PulseRoom, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "api: {url: 'ws://127.0.0.1:9/'}\naudio: {output: {device: spk, mixer: Bass}}\n"
    )
    assert main(["check-config", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "audio.output.mixer: no mixer control 'Bass' on spk (it has: Master, Capture)" in err
    path.write_text(
        "api: {url: 'ws://127.0.0.1:9/'}\naudio: {output: {device: spk, mixer: Master}}\n"
    )
    assert main(["check-config", "--config", str(path)]) == 0


@pytest.mark.usefixtures("full_room")
async def test_ctl_volume_sets_the_mixer_shows_in_status_and_persists(harness: Harness) -> None:
    path = harness.daemon.cfg.control.socket

    async def ctl(*value: str) -> dict[str, object]:
        args = {"value": value[0]} if value else {}
        return await asyncio.to_thread(control.request, path, "volume", **args)

    assert await ctl() == {"ok": True, "volume": 100, "control": "mixer Master on spk"}
    assert (await ctl("40"))["volume"] == 40
    assert sink_volume() == 40
    assert (await ctl("up"))["volume"] == 50 and sink_volume() == 50
    assert (await ctl("down"))["volume"] == 40
    bad = await ctl("loud")
    assert bad["ok"] is False and "volume must be 0..100, up or down" in str(bad["error"])
    status = await asyncio.to_thread(control.request, path, "status")
    assert status["volume"] == 40 and status["volume_control"] == "mixer Master on spk"
    assert Persisted(state_dir()).volume() == 40
    # the tools' setter is the same one
    harness.daemon.set_output_volume(0.25)
    assert sink_volume() == 25 and Persisted(state_dir()).volume() == 25
    assert harness.daemon.output_volume() == 0.25


@pytest.mark.parametrize("fake_harness", [{"audio__output": {"device": "testplay"}}], indirect=True)
async def test_software_gain_scales_what_is_played(fake_harness: Harness) -> None:
    """No mixer control on the fake speaker's PCM: the volume multiplies the gain of each
    sound played (cues included)."""
    h = fake_harness
    pb = h.daemon.playback
    assert h.daemon.hat.volume is not None and h.daemon.hat.volume.control is None
    assert (await h.daemon._control("volume", value="50"))["volume"] == 50
    before = len(pb.gains)  # type: ignore[union-attr]
    h.daemon._cue("error")
    assert pb.gains[before:] == [0.5]  # type: ignore[union-attr]


def test_only_volume_takes_an_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ctl", "--socket", "/nonexistent.sock", "status", "50"]) == 2
    assert "agentd ctl status takes no argument (got '50')" in capsys.readouterr().err
    assert main(["ctl", "--socket", "/nonexistent.sock", "volume", "50"]) == 1  # not running
    assert "agentd is not running" in capsys.readouterr().err
