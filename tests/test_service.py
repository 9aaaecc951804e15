"""The daemon end to end: simulator on loopback, the PulseAudio room as mic and speaker,
gpiozero's MockFactory for button and LED, a real NOTIFY_SOCKET and control socket."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from agentd.sim.room import (
    cut_error_ms,
    floats,
    loud_end_ms,
    loud_runs_ms,
    played_span_ms,
    room_probe,
)
from agentd.sim.server import DEFAULT_REPLY
from tests import rigs
from tests.harness import Harness


async def speak(room: rigs.PulseRoom, tmp: Path, text: str) -> float:
    """Say ``text`` into the room; returns the length of the speech in seconds."""
    speech = rigs.espeak(text, 16000, tmp / "u")
    proc = room.play(rigs.write_wav(tmp / "u.wav", speech, 16000))
    await asyncio.to_thread(proc.wait, 20)
    voiced = np.flatnonzero(np.abs(speech) > 300)
    return float((voiced[-1] - voiced[0]) / 16000)


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
    probe = room_probe(asyncio.get_running_loop(), heard.append)
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
    assert commit_ms <= 15 and create_ms <= 15, (commit_ms, create_ms)
    appended = sum(len(e["audio"]) * 3 // 4 for e in sim.client_events("input_audio_buffer.append"))
    assert appended / 48000 >= spoken_s, (appended / 48000, spoken_s)  # every word reached it
    assert sim.client_events("response.create")[0]["response"]["metadata"] == {"user_id": "test-pi"}
    await h.until(lambda: h.state() == "speaking")
    mark = len(heard)
    await h.until(lambda: h.state() == "idle")
    await asyncio.sleep(0.3)
    assert led.value == pytest.approx(idle_led)  # LED back to IDLE
    short = floats(sim.speech.pcm(sim.reply, 16000))
    room1 = floats(b"".join(heard[mark:]))
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
    long = floats(sim.speech.pcm(sim.reply, 16000))
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
    room2 = floats(b"".join(heard[mark - 50 :]))
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


def test_agentd_demo_runs_one_turn_without_card_or_key() -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "OPENAI_API_KEY")}
    out = subprocess.run(
        [sys.executable, "-m", "agentd", "demo", "--sound-card", "no"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for line in (
        "state → listening",
        "state → thinking",
        "state → speaking",
        "user     :",
        "assistant:",
        "demo finished",
    ):
        assert line in out.stdout, out.stdout
