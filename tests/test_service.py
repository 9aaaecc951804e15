"""The daemon end to end: simulator on loopback, the PulseAudio room as mic and speaker,
gpiozero's MockFactory for button and LED, a real NOTIFY_SOCKET and control socket."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from agentd import conversation as cv
from agentd.audio.frame import chop
from agentd.audio.pcm import to_float
from agentd.sim.server import DEFAULT_REPLY
from tests import rigs
from tests.fakes import FakeCapture, FakeLink, FakePlayback
from tests.harness import Harness, run_demo
from tests.room_oracle import (
    cut_error_ms,
    loud_end_ms,
    loud_runs_ms,
    played_span_ms,
    room_probe,
)


async def speak(room: rigs.PulseRoom, tmp: Path, text: str) -> float:
    """Say ``text`` into the room; returns the length of the speech in seconds."""
    speech = rigs.espeak(text, 16000, tmp / "u")
    proc = room.play(rigs.write_wav(tmp / "u.wav", speech, 16000))
    await asyncio.to_thread(proc.wait, 20)
    voiced = np.flatnonzero(np.abs(speech) > 300)
    return float((voiced[-1] - voiced[0]) / 16000)


@pytest.mark.slow  # ~9-11 s: keeps scripts/test under 10 min with a cold wheel cache
async def test_push_to_talk_turn_interrupt_and_truncate(
    harness: Harness, room: rigs.PulseRoom, tmp_path: Path
) -> None:
    h, sim = harness, harness.sim
    button = h.factory.pin(17)
    led = h.daemon.gpio.led  # type: ignore[union-attr]
    assert h.daemon.gpio is not None and h.daemon.gpio.available
    idle_led = led.value
    # listen to the room from outside for the whole test: this is "the speaker"
    heard: list[bytes] = []
    probe = room_probe(asyncio.get_running_loop(), lambda f: heard.append(f.audio))
    probe.start()

    # turn 1: hold, speak, release; the whole answer plays and the LED returns to IDLE
    sim.reply = "It is twelve o'clock."
    button.drive_low()
    await h.until(lambda: h.state() == "listening")
    assert led.value == pytest.approx(1.0)  # LISTENING: solid
    spoken_s = await speak(room, tmp_path, "what time is it in the kitchen")
    await asyncio.sleep(0.8)  # the room's own capture latency
    t_release = time.monotonic()
    button.drive_high()
    await h.until(lambda: sim.client_events("response.create"))
    rec = {r.event["type"]: r.t for r in sim.events}
    commit_ms = (rec["input_audio_buffer.commit"] - t_release) * 1000
    create_ms = (rec["response.create"] - t_release) * 1000
    print(f"release → commit {commit_ms:.1f} ms, response.create {create_ms:.1f} ms")
    # sent at the release, not after a hangover or a timer; the 15 ms target is the p95
    # bench/daemon_latency.py measures over many turns (one turn here came at 16.4 ms while
    # another process loaded both of the shared machine's cores)
    assert commit_ms <= 50 and create_ms <= 50, (commit_ms, create_ms)
    appended = sum(len(e["audio"]) * 3 // 4 for e in sim.client_events("input_audio_buffer.append"))
    assert appended / 48000 >= spoken_s, (appended / 48000, spoken_s)  # every word reached it
    assert sim.client_events("response.create")[0]["response"]["metadata"] == {"user_id": "test-pi"}
    await h.until(lambda: h.state() == "speaking")
    mark = len(heard)
    await h.until(lambda: h.state() == "idle")
    await asyncio.sleep(0.3)
    assert led.value == pytest.approx(idle_led)  # LED back to IDLE
    short = to_float(sim.speech.pcm(sim.reply, 16000))
    room1 = to_float(b"".join(heard[mark:]))
    end1, cut1 = played_span_ms(room1, short)
    assert end1 == loud_end_ms(short) and cut1 == float("inf")  # the answer played to its end
    assert not sim.client_events("conversation.item.truncate")

    # turn 2: a long answer, interrupted by a click while SPEAKING
    sim.reply = DEFAULT_REPLY
    button.drive_low()
    await h.until(lambda: h.state() == "listening")
    await speak(room, tmp_path, "tell me a story")
    await asyncio.sleep(0.8)
    button.drive_high()
    await h.until(lambda: h.state() == "speaking")
    mark = len(heard)
    pb = h.daemon.playback
    assert pb is not None
    # click in the middle of the longest stretch of speech after the first second, so the cut
    # lands inside speech and the room's recording pins it down
    long = to_float(sim.speech.pcm(sim.reply, 16000))
    lo_run, hi_run = max(loud_runs_ms(long, after_ms=1000), key=lambda r: r[1] - r[0])
    item = h.daemon.conv.item_id
    assert item is not None
    await h.until(lambda: pb.heard_ms(item) >= (lo_run + hi_run) / 2)
    t_press = time.monotonic()
    button.drive_low()
    await h.until(lambda: sim.client_events("conversation.item.truncate"))
    await asyncio.sleep(0.5)
    button.drive_high()
    probe.stop()
    assert probe.stats.dropped_frames == 0  # the room recording is continuous
    assert sim.client_events("response.cancel")
    (trunc,) = sim.client_events("conversation.item.truncate")
    drop_ms = (pb.flushed_at - t_press) * 1000
    assert 0 <= drop_ms <= 50, drop_ms  # press → ALSA buffer dropped

    # what came out of the room, by content: the answer from its onset up to the cut
    room2 = to_float(b"".join(heard[mark - 50 :]))
    lo, hi = played_span_ms(room2, long)
    assert lo_run - 100 < lo <= hi < hi_run + 100, (lo, hi, lo_run, hi_run)  # cut inside speech
    assert hi - lo <= 20, (lo, hi)  # ... so the room pins the cut down
    end_ms = trunc["audio_end_ms"]
    # audio_end_ms must fall where the room really went quiet: within ±20 ms of the cut
    # (the cut lies between the last loud block that matched and the first that did not)
    error_ms = cut_error_ms(lo, hi, end_ms)
    # the speaker fell silent: answer content that came out after the moment the drop
    # was decided (the same ALSA position the truncate reports)
    after_ms = max(0.0, lo - end_ms)
    print(
        f"interrupt: press→ALSA drop {drop_ms:.1f} ms; answer heard {lo:.0f}–{hi:.0f} ms, "
        f"audio_end_ms {end_ms} (error {error_ms:+.0f} ms, played after drop {after_ms:.0f} ms)"
    )
    assert abs(error_ms) <= 20, (end_ms, lo, hi)
    assert after_ms <= 50
    status = h.daemon.status()
    assert status["interrupts"] == 1 and status["turns"] >= 2


async def test_ctl_status_reload_and_sigterm_semantics(harness: Harness, tmp_path: Path) -> None:
    import subprocess
    import sys

    h = harness
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agentd", "ctl", "--socket", str(tmp_path / "ctl.sock"), "status"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    status = json.loads(out.stdout)
    for key in (
        "state",
        "connected",
        "dialect",
        "model",
        "user_id",
        "turns",
        "interrupts",
        "last_error",
        "overruns",
        "underruns",
        "speaker_starved",
        "reconnects",
        "uptime_s",
    ):
        assert key in status
    assert status["connected"] is True and status["user_id"] == "test-pi"
    assert oct(os.stat(tmp_path / "ctl.sock").st_mode & 0o777) == "0o660"

    # ctl press/release act like the button
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agentd", "ctl", "--socket", str(tmp_path / "ctl.sock"), "press"],
        timeout=10,
    )
    await h.until(lambda: h.state() == "listening")
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agentd", "ctl", "--socket", str(tmp_path / "ctl.sock"), "release"],
        timeout=10,
    )
    await h.until(lambda: h.state() == "idle")  # nothing said: dropped with a short cue

    # a bad reload keeps the old config, STATUS says so
    cfg_path = h.daemon.config_path
    good = cfg_path.read_text()
    cfg_path.write_text(good + "\nvad: {aggressivenes: 2}\n")
    h.notify.messages.clear()
    os.kill(os.getpid(), __import__("signal").SIGHUP)
    await h.notify.wait_for("RELOADING=1")
    msg_t = await h.notify.wait_for("reload failed")
    assert msg_t and h.daemon.cfg.vad.aggressiveness == 2
    assert "READY=1" in "".join(h.notify.drain())
    # a good reload: new instructions → session.update, no reconnect
    data = yaml.safe_load(good)
    data["agent"]["instructions"] = "Speak like a pirate."
    cfg_path.write_text(yaml.safe_dump(data))
    before = len(h.sim.client_events("session.update"))
    answer = await h.daemon._control("reload")
    assert answer["ok"] is True
    await h.until(lambda: len(h.sim.client_events("session.update")) > before)
    assert (
        h.sim.client_events("session.update")[-1]["session"]["instructions"]
        == "Speak like a pirate."
    )
    assert h.sim.connections == 1
    assert h.daemon.status()["reload_error"] is None
    # server settings → reconnect; audio settings → devices reopened; GPIO → rebound
    data["api"]["model"] = "gpt-realtime-mini"
    data["audio"]["output"]["buffer_ms"] = 100
    data["led"] = {"pin": 26}
    cfg_path.write_text(yaml.safe_dump(data))
    old_capture, old_led = h.daemon.capture, h.daemon.gpio.led  # type: ignore[union-attr]
    assert (await h.daemon._control("reload"))["ok"] is True
    await h.until(lambda: h.sim.connections == 2 and h.daemon.conv.connected)
    assert h.sim.handshakes[-1].path.endswith("model=gpt-realtime-mini")
    assert h.daemon.capture is not old_capture and h.daemon.playback is not None
    assert h.daemon.playback.settings.buffer_ms == 100
    assert h.daemon.gpio is not None and h.daemon.gpio.led is not old_led
    assert h.daemon.gpio.led.pin.info.name == "GPIO26"
    await h.notify.wait_for("WATCHDOG=1")


async def test_the_start_up_heap_is_out_of_the_collectors_walk_while_it_runs(
    fake_harness: Harness,
) -> None:
    """A full collection walks every object the collector tracks with the GIL held, and
    Playback's writer waits it out (bench/gc_pause.py: 15-22 ms median over the daemon's
    start-up heap on this machine, under 0.1 ms frozen): what the daemon made starting up (the
    daemon itself, its config, its conversation) is frozen as it becomes ready; its stop
    gives it back, so a process that runs another collects this one's cycles."""
    h = fake_harness
    walked = {id(o) for o in gc.get_objects()}
    made = [h.daemon, h.daemon.cfg, h.daemon.conv]
    assert not [o for o in made if id(o) in walked], "start-up objects walked by a collection"
    assert gc.get_freeze_count() >= len(made)
    later: list[object] = [{}]  # made after READY=1: walked as usual
    assert any(o is later for o in gc.get_objects())
    h.daemon.stop_event.set()
    await asyncio.wait_for(h.task, 5)
    assert gc.get_freeze_count() == 0
    walked = {id(o) for o in gc.get_objects()}
    assert all(id(o) in walked for o in made)


async def test_watchdog_stops_when_audio_thread_dies(harness: Harness) -> None:
    h = harness
    await h.notify.wait_for("WATCHDOG=1")
    assert h.daemon.healthy()
    assert h.daemon.capture is not None
    h.daemon.capture.stop()  # the thread is gone: unhealthy
    assert not h.daemon.healthy()
    await asyncio.sleep(1.2)
    h.notify.drain()
    h.notify.messages.clear()
    await asyncio.sleep(2.2)
    assert not any("WATCHDOG=1" in m for m in h.notify.drain())


@pytest.mark.slow  # ~9-11 s: keeps scripts/test under 10 min with a cold wheel cache
def test_agentd_demo_runs_one_turn_without_card_or_key() -> None:

    run_demo(
        expect=(
            "state → listening",
            "state → thinking",
            "state → speaking",
            "user     :",
            "assistant:",
            "tool call: the model called get_time",  # issue 21: the demo shows a tool
            "assistant: It is ",
            "demo finished",
        )
    )


# ---------------------------------------------------------------- problems: LED, cue, STATUS=


def flashes(pin: Any, skip: float) -> list[tuple[float, float]]:
    """(start, length) of every whole stretch the LED pin was lit since ``clear_states()``,
    ignoring the first ``skip`` seconds (MockPin keeps each change's delay since the last)."""
    out, t, lit_at = [], 0.0, None
    for delta, v in pin.states:
        t += delta
        if v > 0.5 and lit_at is None:
            lit_at = t
        elif v <= 0.5 and lit_at is not None:
            if lit_at >= skip:
                out.append((lit_at, t - lit_at))
            lit_at = None
    return out


@pytest.mark.slow  # > 10 s: scripts/test-slow keeps the fast suite under 10 min
@pytest.mark.parametrize("pwm", [True, False], ids=["pwm-led", "plain-led"])
async def test_each_problem_has_its_own_led_pattern(tmp_path: Path, pwm: bool) -> None:
    """The LED patterns on gpiozero's MockFactory: a rejected key (two quick flashes every
    2 s), out of quota (1 s on, 1 s off) and a network outage (one short flash every 2 s)
    are told apart by what the pin does over a few seconds."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from agentd.config import load
    from agentd.conversation import Problem, State
    from agentd.device.gpio import Gpio
    from agentd.sim import Simulator
    from tests.harness import write_config

    sim = Simulator()  # only for its URL: nothing connects
    cfg = load(write_config(tmp_path / "c.yaml", sim, tmp_path, button__pin=None)).config
    factory = MockFactory(pin_class=MockPWMPin) if pwm else MockFactory()
    gpio = Gpio(cfg.button, cfg.led, asyncio.get_running_loop(), lambda e: None, factory)
    assert gpio.start()
    pin = factory.pin(25)
    seen: dict[str, list[tuple[float, float]]] = {}
    try:
        for name, state, problem in (
            ("auth", State.OFFLINE, Problem.AUTH),
            ("quota", State.IDLE, Problem.QUOTA),
            ("offline", State.OFFLINE, None),
        ):
            pin.clear_states()
            gpio.show(state, problem=problem)
            await asyncio.sleep(4.3)
            seen[name] = flashes(pin, 0.1)
    finally:
        gpio.close()
        factory.reset()
    counts = {k: len(v) for k, v in seen.items()}
    lengths = {k: [round(d, 2) for _, d in v] for k, v in seen.items()}
    print(f"flashes in 4.2 s: {counts}; lengths {lengths}")
    assert 3 <= counts["auth"] <= 5 and all(0.1 <= d <= 0.3 for d in lengths["auth"])
    pairs = [b[0] - a[0] for a, b in itertools.pairwise(seen["auth"])]
    assert min(pairs) <= 0.45 and max(pairs) >= 1.5  # grouped in twos, a pause between
    assert 1 <= counts["quota"] <= 2 and all(0.8 <= d <= 1.2 for d in lengths["quota"])
    assert 1 <= counts["offline"] <= 2 and all(0.1 <= d <= 0.35 for d in lengths["offline"])


def status_lines(h: Harness) -> list[str]:
    return [m for m in h.notify.drain() if "STATUS=" in m]


async def test_rejected_key_quota_and_outage_each_say_so_in_status(harness: Harness) -> None:
    """Each problem: its own STATUS= line (read from the real NOTIFY_SOCKET), its own LED
    pattern and its own cue, once per problem."""
    h, sim = harness, harness.sim
    cues: list[str] = []
    h.daemon.hooks.on_cue = cues.append
    gpio = h.daemon.gpio
    assert gpio is not None

    async def problem(expect: str, text: str) -> None:
        await h.until(lambda: h.daemon.status()["problem"] == expect, timeout=20)
        await h.until(lambda: any(text in m for m in status_lines(h)), timeout=20)
        assert h.daemon.status()["problem"] == expect
        assert gpio._shown is not None and gpio._shown[2] in (expect, None)

    # out of quota at the handshake (HTTP 429)
    sim.faults.reject_status = 429
    sim.drop_all()
    h.notify.messages.clear()
    await problem("quota", "out of quota or rate limited")
    assert gpio._shown == (cv.State.OFFLINE, False, "quota")
    # the key is rejected (HTTP 401)
    sim.faults.reject_status = 401
    h.notify.messages.clear()
    await problem("auth", "key rejected")
    await h.until(lambda: gpio._shown == (cv.State.OFFLINE, False, "auth"))
    # the network is gone (nothing listens on the server's port)
    await sim.stop()
    sim.faults.reject_status = None
    h.notify.messages.clear()
    h.daemon.link.reconnect()  # type: ignore[union-attr]  # do not wait out the auth floor
    await problem("offline", "network down")
    assert gpio._shown == (cv.State.OFFLINE, False, None)  # the plain OFFLINE slow blink
    await sim.start()  # same port
    await h.until(lambda: h.state() == "idle" and h.daemon.conv.connected, timeout=40)
    assert h.daemon.status()["problem"] is None
    assert any(
        m.endswith("connected to openai") for m in [*status_lines(h), h.daemon.status_line()]
    )
    # a quota error event on a live session: the turn fails with the quota cue, then the
    # quota pattern shows at rest until answers come again
    sim.faults.error_event = {
        "type": "insufficient_quota",
        "code": "insufficient_quota",
        "message": "You exceeded your current quota",
    }
    h.daemon.feed(cv.Press())
    await h.until(lambda: h.state() == "error")
    await h.until(lambda: h.state() == "idle")
    assert gpio._shown == (cv.State.IDLE, False, "quota")
    assert [c for c in cues if c in ("offline", "auth", "quota")] == [
        "offline",  # drop_all: the connection was lost
        "quota",
        "auth",
        "offline",
        "quota",
    ], cues


# ---------------------------------------------------------------- reload mid-turn


def uplinked_16k(sim: Any) -> int:
    return sum(
        len(e["audio"]) * 3 // 4 * 2 // 3 for e in sim.client_events("input_audio_buffer.append")
    )


async def test_reload_during_a_push_to_talk_hold_keeps_the_hold(fake_harness: Harness) -> None:
    """A reload that switches to toggle mode and a new voice detector lands in the middle of
    a push-to-talk hold: the hold goes on (all its audio goes up, the release ends it), and
    toggle applies from the next turn. (In-memory mic and speaker: the server's bytes are the
    spoken ones.)"""
    h, sim = fake_harness, fake_harness.sim
    speech = rigs.espeak("what is the weather like today", 16000, Path("unused"))
    b = speech.astype("<i2").tobytes()
    frames = chop(b, 16000, 20, start=time.monotonic())
    sim.reply = "Fine."
    h.daemon.feed(cv.Press())
    await h.until(lambda: h.state() == "listening")
    pb = h.daemon.playback
    assert pb is not None
    await h.until(lambda: not pb.busy())
    half = len(frames) // 2
    for f in frames[:half]:
        h.mic(f)
    data = yaml.safe_load(h.daemon.config_path.read_text())
    data["turn"] = {"mode": "toggle"}
    data["vad"] = {"hangover_ms": 700}
    h.daemon.config_path.write_text(yaml.safe_dump(data))
    assert (await h.daemon._control("reload"))["ok"] is True
    assert h.state() == "listening"
    for f in frames[half:]:
        h.mic(f)
    h.daemon.feed(cv.Release())  # still a push-to-talk hold: the release ends it
    await h.until(lambda: h.state() == "thinking")
    await h.until(lambda: sim.client_events("input_audio_buffer.commit"))  # after every append
    spoken = sum(len(f.audio) for f in frames)
    assert uplinked_16k(sim) >= spoken * 0.95, (uplinked_16k(sim), spoken)
    await h.until(lambda: h.state() == "speaking")
    await h.until(lambda: h.state() == "idle")
    assert h.daemon.gate.s.mode == "toggle" and h.daemon.gate.s.hangover_ms == 700
    # the next turn is a toggle turn: a click starts it, the release does not end it, the
    # next click does
    await asyncio.sleep(0.5)
    h.daemon.feed(cv.Press())
    h.daemon.feed(cv.Release())
    await asyncio.sleep(0.3)
    assert h.state() == "listening"
    h.daemon.feed(cv.Press())
    assert h.state() != "listening"


async def test_reload_keeps_the_auth_floor_and_the_transcript_state(tmp_path: Path) -> None:
    """Link.configure used to rebuild the backoff (a rejected key then hammered the server
    again after every reload) and the codec (xStar's cumulative transcripts restarted)."""
    from agentd.config import load
    from agentd.realtime.backoff import AUTH_FAILURES_BEFORE_FLOOR
    from agentd.realtime.connection import Link
    from agentd.sim import Simulator
    from tests.harness import write_config

    sim = Simulator("xstar")  # only for its URL: nothing connects
    os.environ["AGENTD_TEST_KEY"] = "sk-one"
    try:
        path = write_config(tmp_path / "c.yaml", sim, tmp_path, api__api_key_env="AGENTD_TEST_KEY")
        cfg = load(path).config
        link = Link(cfg, "sk-one", lambda e: None, lambda s: None)
        for _ in range(AUTH_FAILURES_BEFORE_FLOOR):
            link.backoff.failed(auth=True)
        assert link.backoff.next_delay() == cfg.reconnect.max_s
        cumulative = '{"type":"conversation.item.input_audio_transcription.delta","item_id":"i1","transcript":"%s"}'
        link.codec.parse(cumulative % "what is")
        codec = link.codec
        # a reload that changes neither the key nor the backoff settings
        path = write_config(
            tmp_path / "c.yaml",
            sim,
            tmp_path,
            api__api_key_env="AGENTD_TEST_KEY",
            agent__instructions="Be brief.",
        )
        assert link.configure(load(path).config, "sk-one") is False
        assert link.codec is codec
        assert link.backoff.next_delay() == cfg.reconnect.max_s  # still at the floor
        (delta,) = link.codec.parse(cumulative % "what is the time")
        assert delta.text == " the time"  # not the whole sentence again
        # a new key is worth a prompt try: the floor goes, and the session is redone
        assert link.configure(load(path).config, "sk-two") is True
        assert link.backoff.next_delay() < cfg.reconnect.max_s
    finally:
        del os.environ["AGENTD_TEST_KEY"]


# ---------------------------------------------------------------- in-memory adapters


@contextlib.asynccontextmanager
async def fake_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Any, FakeCapture, FakePlayback, FakeLink]]:
    """The daemon on in-memory mic, speaker and link (no PulseAudio, no socket), idle."""
    from agentd.config import load
    from agentd.service import Daemon, Hooks
    from agentd.sim import Simulator
    from tests.harness import write_config

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    made: dict[str, Any] = {}

    def keep(name: str, make: Any) -> Any:
        def build(*args: Any, **kwargs: Any) -> Any:
            made[name] = make(*args, **kwargs)
            return made[name]

        return build

    cfg = write_config(tmp_path / "c.yaml", Simulator(), tmp_path, sounds__enabled=False)
    hooks = Hooks(
        use_gpio=False,
        make_capture=keep("mic", FakeCapture),
        make_playback=keep("speaker", FakePlayback),
        make_link=keep("link", FakeLink),
    )
    d = Daemon(cfg, load(cfg), hooks)
    task = asyncio.create_task(d.run())
    try:
        while d.conv.state is not cv.State.IDLE:
            await asyncio.sleep(0.001)
        yield d, made["mic"], made["speaker"], made["link"]
    finally:
        d.stop_event.set()
        await asyncio.wait_for(task, 5)


def answering(d: Any, link: FakeLink, seconds: float) -> None:
    """A turn pressed and released, and ``seconds`` of its answer at the API's 24 kHz."""
    from agentd.realtime import events as ev

    d.feed(cv.Press())
    d.feed(cv.Release())
    link.inject(
        ev.ResponseCreated("r1"),
        ev.ItemAdded("i1", "assistant", "r1"),
        ev.AudioChunk("r1", "i1", 0, b"\x10\x00" * int(24000 * seconds)),
    )
    assert d.conv.state is cv.State.SPEAKING


async def test_barge_in_truncates_at_what_the_speaker_played_on_fakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn's audio goes up and is committed, the answer's audio goes to the speaker, and
    a press after exactly 300 ms of a 1 s answer flushes the speaker and truncates the item
    at 300 ms heard — on a speaker clock the test drives, so the figure is exact."""
    from agentd.realtime import client_events as ce
    from agentd.realtime import events as ev

    async with fake_daemon(tmp_path, monkeypatch) as (d, mic, pb, link):
        d.feed(cv.Press())
        assert d.conv.state is cv.State.LISTENING
        speech = rigs.espeak("what is the weather like today", 16000, Path("unused"))
        frames = chop(speech.astype("<i2").tobytes(), 16000, 20, start=time.monotonic())
        for f in frames:
            mic.push(f)
        d.feed(cv.Release())
        assert d.conv.state is cv.State.THINKING
        up = sum(len(e.pcm) for e in link.sent_of(ce.AppendAudio))
        spoken = sum(len(f.audio) for f in frames)
        assert up >= spoken * 3 // 2 * 0.95, (up, spoken)  # at 24 kHz on the wire
        assert link.sent_of(ce.Commit) and link.sent_of(ce.CreateResponse)
        second = b"\x10\x00" * 24000  # 1 s at the 24 kHz API rate
        link.inject(
            ev.ResponseCreated("r1"),
            ev.ItemAdded("i1", "assistant", "r1"),
            ev.AudioChunk("r1", "i1", 0, second),
        )
        assert d.conv.state is cv.State.SPEAKING and pb.busy()
        assert pb.played_ms("i1") == 1000
        pb.advance(0.3)
        d.feed(cv.Press())  # the user interrupts
        truncates = link.sent_of(ce.Truncate)
        assert [(t.item_id, t.audio_end_ms) for t in truncates] == [("i1", 300)]
        assert pb.flushes >= 1 and not pb.busy()
        assert d.conv.state is cv.State.LISTENING


@pytest.mark.parametrize("reconnect", [False, True])
async def test_a_truncate_waiting_for_the_speaker_goes_only_to_its_own_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reconnect: bool
) -> None:
    """A truncate waits (at most TRUNCATE_WAIT_S) for the flush to stop the speaker; a
    session opened meanwhile never had the item (the server would answer an error), so it
    is sent only where the answer played."""
    from agentd.realtime import client_events as ce

    async with fake_daemon(tmp_path, monkeypatch) as (d, _, pb, link):
        answering(d, link, 1.0)
        pb.advance(0.3)
        pb.stopping = True  # (the thread has not dropped yet)
        d.feed(cv.Press())
        await asyncio.sleep(3 * pb.POLL_S)
        assert not link.sent_of(ce.Truncate)  # waiting for the speaker
        if reconnect:
            link.reconnect()
        pb.stopping = False
        await asyncio.sleep(3 * pb.POLL_S)
        truncates = [(t.item_id, t.audio_end_ms) for t in link.sent_of(ce.Truncate)]
        assert truncates == ([] if reconnect else [("i1", 300)])
