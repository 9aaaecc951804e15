"""A latching mute switch (issue 24, point 4) and custom cue WAVs (point 6), on the daemon
with MockFactory pins and the in-memory speaker."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from agentd import control
from agentd import conversation as cv
from agentd.audio.alsa import Playback
from agentd.config import ConfigError, from_mapping
from agentd.device.cues import CueSounds, load_wav
from tests import rigs
from tests.harness import Harness

SWITCH = 5
CUE_WAV = rigs.RIG_DIR / "my-listening.wav"


def write_wav(path: Path, seconds: float, rate: int, channels: int = 1) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    x = (np.sin(2 * np.pi * 500 * t) * 12000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(x, channels).tobytes())
    return path


write_wav(CUE_WAV, 0.75, 44100, channels=2)


@pytest.mark.parametrize("fake_harness", [{"mute_switch__pin": SWITCH}], indirect=True)
async def test_the_switch_mutes_and_wins_over_ctl_unmute(fake_harness: Harness) -> None:
    h = fake_harness
    looks: list[cv.State] = []
    h.daemon.hooks.on_led = lambda state, fault, problem: looks.append(state)
    path = h.daemon.cfg.control.socket
    h.factory.pin(SWITCH).drive_low()  # switch on (pulled up, closes to ground)
    await h.until(lambda: h.state() == "muted")
    assert looks[-1] is cv.State.MUTED  # the LED shows the muted pattern
    assert h.daemon._mic_on is False  # the microphone is closed
    answer = await asyncio.to_thread(control.request, path, "unmute")
    assert answer == {"ok": False, "error": "the mute switch is on: turn it off to unmute"}
    h.daemon.feed(cv.DoublePress())  # nor does the button
    assert h.state() == "muted"
    status = await asyncio.to_thread(control.request, path, "status")
    assert status["muted"] is True and status["mute_switch"] is True
    h.factory.pin(SWITCH).drive_high()  # switch off
    await h.until(lambda: h.state() == "idle")
    assert h.daemon._mic_on is True
    # without the switch, ctl mute/unmute work as before
    await asyncio.to_thread(control.request, path, "mute")
    assert h.state() == "muted"
    assert (await asyncio.to_thread(control.request, path, "unmute"))["ok"] is True
    assert h.state() == "idle"


def test_switch_pins_are_checked() -> None:
    with pytest.raises(ConfigError) as e:
        from_mapping({"mute_switch": {"pin": 17, "active_high": True}})
    assert e.value.problems == [
        "mute_switch.pin: pin 17 is also button.pin",
        "mute_switch.active_high: only with mute_switch.pull_up: false (with the pull-up the "
        "switch pulls the pin low when on)",
    ]


@pytest.mark.parametrize(
    "fake_harness", [{"sounds__files": {"listening": str(CUE_WAV)}}], indirect=True
)
async def test_a_cue_file_replaces_the_tone_at_its_own_rate(fake_harness: Harness) -> None:
    """The 0.75 s stereo 44.1 kHz file is played for the listening cue (mixed to mono, handed
    to the speaker at 44.1 kHz, which resamples to the card); other cues keep their tones."""
    h = fake_harness
    pb = h.daemon.playback
    cues: list[str] = []
    h.daemon.hooks.on_cue = cues.append
    n = len(pb.chunks)  # type: ignore[union-attr]
    h.daemon.feed(cv.Press())
    assert cues == ["listen_start"]
    chunk = pb.chunks[n]  # type: ignore[union-attr]
    assert chunk.end - chunk.start == pytest.approx(0.75, abs=0.001)
    h.daemon.feed(cv.Release())  # a turn too short to send
    assert cues[-1] == "short"
    tone = pb.chunks[-1]  # type: ignore[union-attr]
    assert tone.end - tone.start == pytest.approx(0.06, abs=0.001)  # the generated tone


def test_cue_files_are_checked_and_read(tmp_path: Path) -> None:
    pcm, rate = load_wav(str(CUE_WAV))
    assert rate == 44100 and len(pcm) == 2 * int(0.75 * 44100)
    assert np.abs(np.frombuffer(pcm, "<i2")).max() == pytest.approx(12000, abs=2)
    long = write_wav(tmp_path / "long.wav", 11, 8000)
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(ConfigError) as e:
        from_mapping(
            {
                "sounds": {
                    "files": {
                        "done": str(long),
                        "error": str(tmp_path / "text.wav"),
                        "muted": "/nonexistent.wav",
                    }
                }
            }
        )
    assert (
        e.value.problems[0]
        == f"sounds.files.done: {long} is 11.0 s long; a cue may be at most 10 s"
    )
    assert e.value.problems[1].startswith(
        f"sounds.files.error: cannot read {tmp_path}/text.wav as a PCM WAV"
    )
    assert e.value.problems[2] == "sounds.files.muted: file not found: /nonexistent.wav"
    # muted has no generated tone: silent unless a file is set
    settings = from_mapping({"sounds": {"files": {"muted": str(CUE_WAV)}}}).sounds
    assert CueSounds(from_mapping({}).sounds.files, 0.5).pcm("muted") is None
    assert CueSounds(settings.files, 0.5).pcm("muted") is not None


@pytest.fixture
def clockspk() -> str:
    """clockspk (a sound card's clock, recording what it plays), emptied; before the daemon."""
    return rigs.clock_pcms()[1]


@pytest.mark.parametrize(
    "fake_harness",
    [
        {
            "sounds__files": {"listening": str(CUE_WAV)},
            "audio__output": {"device": "clockspk", "rate": 48000, "buffer_ms": 60},
            "hooks": {"make_playback": Playback},
        }
    ],
    indirect=True,
)
async def test_a_cue_file_is_resampled_to_the_card(clockspk: str, fake_harness: Harness) -> None:
    """The real speaker at 48 kHz plays the 44.1 kHz file: 0.75 s of its 500 Hz tone."""
    h = fake_harness
    before = len(rigs.clockspk_played())
    h.daemon.feed(cv.Press())
    await asyncio.sleep(1.5)
    played = rigs.clockspk_played()[before:].astype(np.float32)
    loud = np.flatnonzero(np.abs(played) > 200)
    assert loud.size, "nothing played"
    span = played[loud[0] : loud[-1] + 1]
    assert len(span) / 48000 == pytest.approx(0.75, abs=0.01)
    spectrum = np.abs(np.fft.rfft(span))
    assert np.argmax(spectrum) * 48000 / len(span) == pytest.approx(500, abs=3)
