"""Wake word (issue 23): the pure policy, the real microWakeWord detector on synthetic speech,
the daemon's wake-word turns on in-memory devices, and the detector under the unit's W^X lock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentd import conversation as cv
from agentd.audio.frame import AudioFrame, chop
from agentd.audio.pcm import SCALE, to_float, to_int16
from agentd.config import WakeSettings, from_mapping
from agentd.config.validate import ConfigError
from agentd.voice import wake as wk
from tests import rigs
from tests.harness import run_demo

RATE = 16000


def tone_frames(seconds: float, start: float = 0.0, level: int = 3000) -> list[AudioFrame]:
    n = int(seconds * RATE)
    x = (level * np.sin(2 * np.pi * 300 * np.arange(n) / RATE)).astype("<i2")
    return chop(x.tobytes(), RATE, 20, start=start)


def pcm(seconds: float, level: int = 0) -> np.ndarray:
    n = int(seconds * RATE)
    return (level * np.sin(2 * np.pi * 300 * np.arange(n) / RATE)).astype("<i2")


def trimmed(x: np.ndarray, floor: int = 300) -> np.ndarray:
    """Speech without the synthesizer's leading and trailing silence."""
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > floor)
    return x[loud[0] : loud[-1] + 1]


# ------------------------------------------------------------------ pure policy


def test_one_word_one_wake_within_the_refractory_period() -> None:
    """The model says yes for several steps in a row: one wake, then none until
    refractory_s has passed."""
    p = wk.WakePolicy(cutoff=0.5, refractory_s=2.0)
    yes = [wk.Score("okay_nabu", 0.9, 10.0 + i * 0.03) for i in range(9)]
    wakes = [p.judge([s]) for s in yes]
    assert [w is not None for w in wakes] == [True] + [False] * 8
    assert p.judge([wk.Score("okay_nabu", 0.9, 11.9)]) is None
    assert p.judge([wk.Score("okay_nabu", 0.9, 12.1)]) is not None
    assert p.judge([wk.Score("okay_nabu", 0.4, 20.0)]) is None  # below the cutoff


def test_the_word_end_is_the_quiet_gap_before_the_detection() -> None:
    """Loud "word", 60 ms of silence, loud "command": a detection 0.2 s into the command is
    traced back to the gap, not to the detection time or into the command."""
    p = wk.WakePolicy(cutoff=0.5, refractory_s=2.0)
    word, gap, cmd = pcm(0.6, 4000), pcm(0.06), pcm(1.0, 4000)
    x = np.concatenate([word, gap, cmd])
    for f in chop(x.tobytes(), RATE, 20, start=100.0):
        p.push(f)
    gap_start, gap_end = 100.6, 100.66
    w = p.judge([wk.Score("okay_nabu", 0.95, gap_end + 0.2)])
    assert w is not None
    assert gap_start - 0.01 <= w.word_end <= gap_end + 0.01, w.word_end
    after = p.since(w.word_end)
    assert all(f.milliseconds == 10 for f in after)
    assert after[0].timestamp == pytest.approx(w.word_end, abs=0.006)
    got = np.frombuffer(b"".join(f.audio for f in after), "<i2")
    cut = round((after[0].timestamp - 100.0) * RATE)
    assert np.array_equal(got, x[cut:])  # every sample after the cut, once, in order


def test_the_ring_keeps_only_the_last_seconds() -> None:
    p = wk.WakePolicy(cutoff=0.5, refractory_s=2.0, ring_s=1.0)
    for f in tone_frames(5.0):
        p.push(f)
    held = sum(f.seconds for f in p.ring)
    assert 1.0 <= held <= 1.04


# ------------------------------------------------------------------ check-config


def test_check_config_names_what_is_wrong_with_the_wake_settings(tmp_path: Path) -> None:
    bad_json = tmp_path / "x.json"
    bad_json.write_text('{"type": "openwakeword", "model": "x.onnx"}')
    cases = [
        ({"turn": {"mode": "wake_word"}, "wake": {"words": ["okay_nabo"]}}, "wake.words[0]"),
        ({"turn": {"mode": "wake_word"}, "wake": {"engine": "open"}}, "wake.engine: open"),
        ({"turn": {"mode": "wake_word"}, "wake": {"model": "rel.json"}}, "absolute path"),
        (
            {"turn": {"mode": "wake_word"}, "wake": {"model": str(bad_json)}},
            "not a microWakeWord model",
        ),
        ({"turn": {"mode": "wake_word"}, "wake": {"words": "okay_nabu"}}, "must be a list"),
        ({"turn": {"follow_up_s": 5}}, "turn.follow_up_s: only used with turn.mode: wake_word"),
        ({"turn": {"mode": "wake_word"}, "wake": {"sensitivity": 1.5}}, "wake.sensitivity"),
    ]
    for data, needle in cases:
        with pytest.raises(ConfigError) as info:
            from_mapping(data)
        assert needle in str(info.value), (data, str(info.value))
    cfg = from_mapping({"turn": {"mode": "wake_word", "follow_up_s": 8}})
    assert cfg.wake.words == ["okay_nabu"] and cfg.turn.follow_up_s == 8


def test_check_config_says_how_to_install_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymicro_wakeword", None)  # as if not installed
    with pytest.raises(ConfigError) as info:
        from_mapping({"turn": {"mode": "wake_word"}})
    assert "pip install 'agentd[wake]'" in str(info.value)


def test_check_config_says_the_detectors_suppressor_needs_the_webrtc_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # as if not installed
    with pytest.raises(ConfigError) as info:
        from_mapping({"turn": {"mode": "wake_word"}})
    assert "wake.noise_suppression: 4 needs the WebRTC" in str(info.value)
    assert "pip install 'agentd[wake]'" in str(info.value)
    from_mapping({"turn": {"mode": "wake_word"}, "wake": {"noise_suppression": 0}})
    with pytest.raises(ConfigError, match=r"wake\.noise_suppression"):
        from_mapping({"wake": {"noise_suppression": 5}})


# ------------------------------------------------------------------ the real detector

WAKE_TEXT, COMMAND_TEXT = "okay nabu", "what is the weather like today"


@pytest.fixture(scope="module")
def voice() -> dict[str, np.ndarray]:
    return {
        "wake": trimmed(rigs.espeak(WAKE_TEXT, RATE, Path("w"))),
        "command": trimmed(rigs.espeak(COMMAND_TEXT, RATE, Path("c"))),
        "near": trimmed(rigs.espeak("okay now what is the weather like", RATE, Path("n"))),
        "other": trimmed(rigs.espeak("the cat sat on the mat by the door", RATE, Path("o"))),
    }


def detections(x: np.ndarray, settings: WakeSettings | None = None) -> list[wk.Wake]:
    listener = wk.WakeListener(settings or WakeSettings())
    out = []
    for f in chop(x.astype("<i2").tobytes(), RATE, 20, start=0.0):
        w = listener.process(f)
        if w is not None:
            out.append(w)
    return out


def test_the_bundled_model_hears_the_word_once_and_not_other_speech(
    voice: dict[str, np.ndarray],
) -> None:
    quiet = pcm(0.5)
    said = np.concatenate([quiet, voice["wake"], quiet])
    heard = detections(said)
    assert len(heard) == 1 and heard[0].word == "okay_nabu"
    word_end = 0.5 + len(voice["wake"]) / RATE
    assert 0.0 < heard[0].t - word_end < 0.5  # detected after the word, not before
    assert abs(heard[0].word_end - word_end) < 0.1
    for text in ("command", "other"):
        assert detections(np.concatenate([quiet, voice[text], quiet])) == [], text
    other_word = WakeSettings(words=["hey_jarvis"])
    assert detections(said, other_word) == []  # the words setting chooses the model


def test_a_custom_model_path_is_loaded(voice: dict[str, np.ndarray], tmp_path: Path) -> None:
    """wake.model: a microWakeWord JSON with its .tflite beside it (a copy of a bundled one)."""
    import shutil

    src = wk.model_paths(WakeSettings(words=["okay_nabu"]))[0]
    shutil.copy(src, tmp_path / "mine.json")
    shutil.copy(src.with_suffix(".tflite"), tmp_path / "okay_nabu.tflite")
    settings = WakeSettings(model=str(tmp_path / "mine.json"))
    quiet = pcm(0.5)
    assert len(detections(np.concatenate([quiet, voice["wake"], quiet]), settings)) == 1


def test_sensitivity_is_the_cutoff(voice: dict[str, np.ndarray]) -> None:
    """A near miss ("okay now …", espeak: peak 0.78) wakes a lax detector, not a strict one;
    the word itself (0.99) wakes both."""
    quiet = pcm(0.5)
    near = np.concatenate([quiet, voice["near"], quiet])
    word = np.concatenate([quiet, voice["wake"], quiet])
    assert len(detections(near, WakeSettings(sensitivity=0.5))) == 1
    assert detections(near, WakeSettings(sensitivity=0.9)) == []
    assert len(detections(word, WakeSettings(sensitivity=0.9))) == 1


BABBLE_TEXTS = (
    "the quick brown fox jumps over the lazy dog near the river bank today",
    "we should fix the window before the winter comes and the rain starts",
    "please bring me the newspaper and a cup of tea from the kitchen table",
)


def test_the_suppressor_lets_the_detector_hear_the_word_in_babble_not_the_server(
    voice: dict[str, np.ndarray],
) -> None:
    """Three talkers at 10 dB below the word, a second before it: the model alone misses it
    (peak 0.66), behind wake.noise_suppression's suppressor it hears it (0.84); the ring, so
    the turn's audio, keeps the microphone's own samples; with the microphone path already
    suppressing, the detector gets no second suppressor."""
    talkers = [trimmed(rigs.espeak(t, RATE, Path("b"))).astype(np.float64) for t in BABBLE_TEXTS]
    n = min(len(t) for t in talkers)
    babble = sum(t[:n] / np.sqrt(np.mean(t[:n] ** 2)) for t in talkers)
    word = voice["wake"].astype(np.float64)
    x = np.concatenate([np.zeros(RATE), word, np.zeros(RATE // 2)])
    noise = np.resize(babble, len(x))
    gain = np.sqrt(np.mean(word**2) / (np.mean(noise**2) * 10 ** (10 / 10)))
    said = np.frombuffer(to_int16((x + gain * noise) / SCALE), "<i2")
    assert detections(said, WakeSettings(noise_suppression=0)) == []
    listener = wk.WakeListener(WakeSettings())
    frames = chop(said.tobytes(), RATE, 20, start=0.0)
    heard = [w for f in frames if (w := listener.process(f)) is not None]
    assert len(heard) == 1
    word_end = 1.0 + len(word) / RATE
    assert 0.0 < heard[0].t - word_end < 0.5
    ring = b"".join(f.audio for f in listener.policy.ring)
    assert ring == b"".join(f.audio for f in frames)[-len(ring) :]  # sent: not suppressed
    assert isinstance(listener.detector, wk.Suppressed)
    from agentd.service import wake_listener

    mode = {"turn": {"mode": "wake_word"}}
    plain = wake_listener(from_mapping(mode))
    mic_ns = wake_listener(from_mapping({**mode, "audio": {"input": {"noise_suppression": 2}}}))
    assert plain is not None and isinstance(plain.detector, wk.Suppressed)
    assert mic_ns is not None and isinstance(mic_ns.detector, wk.MicroDetector)


W_X_CHILD = """
import ctypes, os, sys, threading
import numpy as np
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(65, 1, 0, 0, 0) == 0 and libc.prctl(66, 0, 0, 0, 0) == 1
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("lock not in force"); sys.exit(3)
except PermissionError:
    pass
threads_before = len(os.listdir("/proc/self/task"))
from agentd.audio.frame import chop
from agentd.config import WakeSettings
from agentd.voice.wake import WakeListener
x = np.fromfile(sys.argv[1], dtype="<i2")
listener = WakeListener(WakeSettings())
heard = [w for f in chop(x.tobytes(), 16000, 20) if (w := listener.process(f))]
print(len(heard), threads_before, len(os.listdir("/proc/self/task")))
"""


def test_the_detector_runs_under_the_units_w_x_lock_in_one_thread(
    voice: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """MemoryDenyWriteExecute=yes is the kernel's PR_SET_MDWE: the TFLite library and its
    models load and detect under it, and no thread is started for them."""
    raw = tmp_path / "w.raw"
    np.concatenate([pcm(0.5), voice["wake"], pcm(0.5)]).astype("<i2").tofile(raw)
    env = {"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", W_X_CHILD, str(raw)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 0, out.stderr
    heard, before, after = map(int, out.stdout.split())
    assert heard == 1
    assert after == before, f"the detector started {after - before} thread(s)"


# ------------------------------------------------------------------ the daemon


class SpyDetector:
    """The real detector, noting when it first scored above the cutoff (the detection)."""

    def __init__(self, real: wk.MicroDetector, cutoff: float) -> None:
        self.real, self.cutoff = real, cutoff
        self.fired_at: list[float] = []
        self.frames = 0

    def process(self, frame: AudioFrame) -> list[wk.Score]:
        self.frames += 1
        scores = self.real.process(frame)
        if any(s.p > self.cutoff for s in scores):
            self.fired_at.append(time.monotonic())
        return scores

    def reset(self) -> None:
        self.real.reset()


async def wake_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **over: Any) -> Any:
    from agentd.config import load
    from agentd.service import Daemon, Hooks
    from agentd.sim import Simulator
    from tests.fakes import FakeCapture, FakeLink, FakePlayback
    from tests.harness import write_config

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    made: dict[str, Any] = {"led": [], "cue": []}

    def keep(name: str, make: Any) -> Any:
        def build(*args: Any, **kwargs: Any) -> Any:
            made[name] = make(*args, **kwargs)
            return made[name]

        return build

    cfg = write_config(tmp_path / "c.yaml", Simulator(), tmp_path, turn__mode="wake_word", **over)
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    hooks = Hooks(
        pin_factory=MockFactory(pin_class=MockPWMPin),
        make_capture=keep("mic", FakeCapture),
        make_playback=keep("speaker", FakePlayback),
        make_link=keep("link", FakeLink),
        on_led=lambda state, *_: made["led"].append((time.monotonic(), state)),
        on_cue=lambda name: made["cue"].append((time.monotonic(), name)),
    )
    d = Daemon(cfg, load(cfg), hooks)
    assert d.wake is not None
    spy = SpyDetector(d.wake.detector, d.cfg.wake.sensitivity)  # type: ignore[arg-type]
    d.wake = wk.WakeListener(d.cfg.wake, detector=spy)
    task = asyncio.create_task(d.run())
    while d.conv.state is not cv.State.IDLE:
        await asyncio.sleep(0.001)
    return d, task, made, spy


async def stop(d: Any, task: Any) -> None:
    from gpiozero import Device

    d.stop_event.set()
    await asyncio.wait_for(task, 5)
    if Device.pin_factory is not None:
        Device.pin_factory.reset()
    Device.pin_factory = None


def uplinked(link: Any) -> np.ndarray:
    """What reached the server, back at 16 kHz (the link carries 24 kHz)."""
    import soxr

    from agentd.realtime import client_events as ce

    up = b"".join(e.pcm for e in link.sent_of(ce.AppendAudio))
    x = to_float(up)
    return soxr.resample(x, 24000, RATE)


def start_in(needle: np.ndarray, hay: np.ndarray) -> float:
    """Where ``needle``'s first 0.2 s sits in ``hay`` (seconds), by cross-correlation."""
    n = needle[: int(0.2 * RATE)]
    c = np.correlate(hay, n, mode="valid")
    return int(np.argmax(c)) / RATE


async def test_one_breath_command_reaches_the_server_whole_and_without_the_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voice: dict[str, np.ndarray]
) -> None:
    """ "okay nabu what is the weather like today" with no pause: the detection comes after
    the command has begun, yet the turn's audio starts where the word ended (the ring
    buffer), holds the whole command, and nothing before the word was sent. The LED shows
    LISTENING and the listen cue plays within 200 ms of the detection."""
    from agentd.realtime import client_events as ce

    d, task, made, spy = await wake_daemon(tmp_path, monkeypatch)
    try:
        mic, link = made["mic"], made["link"]
        lead = pcm(1.0)
        said = np.concatenate([lead, voice["wake"], voice["command"], pcm(1.5)])
        word_end = (len(lead) + len(voice["wake"])) / RATE
        t0 = time.monotonic()
        detected_in_audio = None
        for f in chop(said.tobytes(), RATE, 20, start=t0):
            mic.push(f)
            if d.conv.state is cv.State.LISTENING and detected_in_audio is None:
                detected_in_audio = f.end - t0
            await asyncio.sleep(0)
        assert d.conv.state is cv.State.THINKING, d.conv.state
        assert detected_in_audio is not None and detected_in_audio > word_end  # mid-command
        sent = uplinked(link)
        ref = to_float(said)
        begins = start_in(sent, ref)
        assert word_end - 0.08 <= begins <= word_end + 0.03, (begins, word_end)
        cmd_end = word_end + len(voice["command"]) / RATE
        assert begins + len(sent) / RATE >= cmd_end, "the command was cut short"
        assert link.sent_of(ce.Commit) and link.sent_of(ce.CreateResponse)
        # "heard you": LED and cue right after the detection
        fired = spy.fired_at[0]
        led = next(t for t, s in made["led"] if s is cv.State.LISTENING)
        cue = next(t for t, n in made["cue"] if n == "listen_start")
        assert led - fired < 0.2 and cue - fired < 0.2, (led - fired, cue - fired)
    finally:
        await stop(d, task)


async def test_nothing_is_sent_without_the_word_and_mute_stops_the_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voice: dict[str, np.ndarray]
) -> None:
    from agentd.realtime import client_events as ce

    d, task, made, spy = await wake_daemon(tmp_path, monkeypatch)
    try:
        mic, link = made["mic"], made["link"]
        before = list(link.sent)
        talk = np.concatenate([voice["other"], pcm(0.7), voice["command"], pcm(0.7)])
        for f in chop(talk.tobytes(), RATE, 20, start=time.monotonic()):
            mic.push(f)
        assert link.sent == before, "speech without the word reached the link"
        assert d.conv.state is cv.State.IDLE
        d.feed(cv.Mute(True))
        frames_before = spy.frames
        wake = np.concatenate([pcm(0.3), voice["wake"], voice["command"], pcm(1.0)])
        for f in chop(wake.tobytes(), RATE, 20, start=time.monotonic()):
            mic.push(f)
        assert spy.frames == frames_before, "the detector ran while muted"
        assert d.conv.state is cv.State.MUTED and not link.sent_of(ce.AppendAudio)
        d.feed(cv.Mute(False))
        for f in chop(wake.tobytes(), RATE, 20, start=time.monotonic()):
            mic.push(f)
        assert link.sent_of(ce.AppendAudio), "unmuted, the word works again"
    finally:
        await stop(d, task)


async def test_a_reload_that_turns_on_the_mics_suppressor_drops_the_detectors_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One suppressor, not two: with audio.input.noise_suppression on, the detector hears the
    mic path's suppressed audio; a reload that changes nothing keeps the listener."""
    import yaml

    d, task, _, _ = await wake_daemon(tmp_path, monkeypatch)
    try:
        listener = d.wake
        assert listener is not None and not listener.mic_suppressed
        data = yaml.safe_load(d.config_path.read_text())
        assert (await d._control("reload"))["ok"] is True
        await asyncio.sleep(0.3)
        assert d.wake is listener
        data["audio"]["input"]["noise_suppression"] = 2
        d.config_path.write_text(yaml.safe_dump(data))
        assert (await d._control("reload"))["ok"] is True
        for _ in range(300):
            if d.wake is not listener:
                break
            await asyncio.sleep(0.01)
        assert d.wake is not None and d.wake.mic_suppressed
        assert isinstance(d.wake.detector, wk.MicroDetector)
    finally:
        await stop(d, task)


async def test_follow_up_window_then_the_word_is_needed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voice: dict[str, np.ndarray]
) -> None:
    """turn.follow_up_s: after the answer a question without the word is sent; once the
    window is over, speech without the word is not."""
    from agentd.realtime import client_events as ce
    from agentd.realtime import events as ev

    d, task, made, _ = await wake_daemon(
        tmp_path, monkeypatch, turn__follow_up_s=1.0, sounds__enabled=False
    )
    try:
        mic, link, pb = made["mic"], made["link"], made["speaker"]
        said = np.concatenate([pcm(0.3), voice["wake"], voice["command"], pcm(1.0)])
        for f in chop(said.tobytes(), RATE, 20, start=time.monotonic()):
            mic.push(f)
        assert d.conv.state is cv.State.THINKING
        link.inject(
            ev.ResponseCreated("r1"),
            ev.ItemAdded("i1", "assistant", "r1"),
            ev.AudioChunk("r1", "i1", 0, b"\x10\x00" * 4800),
            ev.ResponseDone("r1", "completed"),
        )
        pb.advance(0.3)
        d.feed(cv.PlaybackFinished())
        assert d.conv.state is cv.State.IDLE
        commits = len(link.sent_of(ce.Commit))
        follow = np.concatenate([voice["command"], pcm(1.0)])
        pb.advance(1.0)  # past the echo tail
        for f in chop(follow.tobytes(), RATE, 20, start=time.monotonic()):
            mic.push(f)
        assert len(link.sent_of(ce.Commit)) == commits + 1, "follow-up not sent"
        link.inject(ev.ResponseCreated("r2"), ev.ResponseDone("r2", "completed"))
        assert d.conv.state is cv.State.IDLE
        await asyncio.sleep(1.1)  # the window closes
        sent = len(link.sent)
        for f in chop(follow.tobytes(), RATE, 20, start=time.monotonic()):
            mic.push(f)
        assert len(link.sent) == sent and d.conv.state is cv.State.IDLE
    finally:
        await stop(d, task)


# ------------------------------------------------------------------ under the unit


async def test_as_shipped_a_wake_word_turn_under_the_units_sandbox(tmp_path: Path) -> None:
    """`agentd run` as the unit starts it (bwrap + setpriv, read-only tree, PR_SET_MDWE before
    any native import: tests/test_shipped.py's rig): the word, then a question, make a turn."""
    from tests.test_shipped import KEY, Shipped, needs_bwrap, start

    if needs_bwrap.args[0]:
        pytest.skip(needs_bwrap.kwargs["reason"])
    said = rigs.espeak("okay nabu, what is the time in the kitchen", 48000, tmp_path)
    rig = Shipped()
    try:
        mic, spk = rig.audio(np.concatenate([np.zeros(24000, "<i2"), said, np.zeros(96000, "<i2")]))
        from agentd.sim import Simulator

        async with Simulator("openai", pace=1.0, api_key=KEY) as sim:
            sim.heard = "what is the time in the kitchen"
            rig.write_config(
                {
                    "api": {"url": sim.url},
                    "audio": {
                        "input": {"device": mic, "rate": 48000, "channels": 2},
                        "output": {"device": spk, "rate": 48000, "channels": 2},
                    },
                    "turn": {"mode": "wake_word"},
                }
            )
            rig.write_key(KEY)
            run = await start(rig, "wake")
            try:
                st = await run.until(lambda s: s["turns"] >= 1, timeout=30)
                assert st["last_error"] is None and st["wake_detections"] >= 1, st
                assert sim.client_events("input_audio_buffer.append")
                assert "Traceback" not in run.text()
                assert await run.stop() == 0
            finally:
                if run.proc.returncode is None:
                    run.proc.kill()
    finally:
        rig.close()


def _expand(group: str, seen: set[str] | None = None) -> set[str]:
    """A systemd system-call group as syscall names (systemd-analyze syscall-filter)."""
    seen = seen if seen is not None else set()
    out: set[str] = set()
    text = subprocess.run(
        ["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    for line in text.splitlines()[1:]:
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name.startswith("@"):
            if name not in seen:
                seen.add(name)
                out |= _expand(name, seen)
        else:
            out.add(name)
    return out


SYSCALL_CHILD = """
import os, sys
import numpy as np
from agentd.audio.frame import chop
from agentd.config import WakeSettings
x = np.fromfile(sys.argv[1], dtype="<i2")
os.write(1, b"MARK\\n")
from agentd.voice.wake import WakeListener
listener = WakeListener(WakeSettings())
heard = [w for f in chop(x.tobytes(), 16000, 20) if (w := listener.process(f))]
os.write(1, b"HEARD %d\\n" % len(heard))
"""


def test_the_detector_makes_only_system_calls_the_units_filter_allows(
    voice: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """SystemCallFilter=@system-service minus the unit's ~groups: every call the detector
    makes from import to detection (strace, after a marker) is in the allowed set."""
    import re
    import shutil

    from tests.test_shipped import UNIT

    if shutil.which("strace") is None or shutil.which("systemd-analyze") is None:
        pytest.skip("strace or systemd-analyze missing (scripts/test installs them)")
    allow: set[str] = set()
    deny: set[str] = set()
    for line in UNIT.read_text().splitlines():
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1]
            negate = value.startswith("~")
            for g in value.lstrip("~").split():
                (deny if negate else allow).update(_expand(g) if g.startswith("@") else {g})
    allowed = allow - deny
    raw = tmp_path / "w.raw"
    np.concatenate([pcm(0.5), voice["wake"], pcm(0.5)]).astype("<i2").tofile(raw)
    trace = tmp_path / "trace"
    out = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), sys.executable, "-c", SYSCALL_CHILD, str(raw)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 0 and "HEARD 1" in out.stdout, out.stdout + out.stderr
    lines = trace.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if "MARK" in ln and "write(" in ln)
    calls = {
        m.group(1)
        for ln in lines[start:]
        if (m := re.match(r"(?:\d+\s+)?([a-z_0-9]+)\(", ln)) is not None
    }
    assert calls, "strace saw no calls"
    assert calls <= allowed, f"refused by the unit's filter: {sorted(calls - allowed)}"


@pytest.mark.slow  # > 10 s: scripts/test-slow keeps the fast suite under 10 min
def test_agentd_demo_wake_word_sends_nothing_before_the_word() -> None:
    """`agentd demo --wake-word`: speech without the word sends no audio; "okay nabu, …"
    makes a turn against the simulator (PulseAudio room, no card, no key)."""

    run_demo(
        "--wake-word",
        expect=(
            "audio events sent so far: 0",
            "state → listening",
            "state → speaking",
            "wake words heard: 1; audio sent only after the word: True",
            "demo finished",
        ),
    )
