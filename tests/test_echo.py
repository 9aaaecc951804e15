"""Full duplex (issue 22): the echo canceller, its far-end tap, the barge-in policy, the echo
path rig, and the real daemon answering in the PulseAudio room without interrupting itself."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentd.audio.echo import EchoCanceller
from agentd.sim.echo_path import EchoRig
from tests import echo_scenes, rigs
from tests.conftest import running_daemon


@pytest.fixture
def echo_rig(room: rigs.PulseRoom) -> Iterator[EchoRig]:
    rig = EchoRig(room.socket, room.env).start()
    yield rig
    rig.stop()


def _talker(room: rigs.PulseRoom, rig: EchoRig | None, tmp: Path) -> echo_scenes.Talker:
    return echo_scenes.Talker(room, rig, tmp)


@pytest.mark.slow
@pytest.mark.parametrize("pace", [1.0, 5.0])  # 3 of 3 runs, and 0 of 52 in the bench
async def test_no_self_interruption_in_the_plain_room(
    room: rigs.PulseRoom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pace: float
) -> None:
    """The room's monitor is the mic: every answer's echo comes straight back (a pure delay).
    With aec and voice barge-in, answers delivered at real time and at 5× play whole."""
    await _two_echo_only_answers_play_whole(room, None, tmp_path, monkeypatch, pace)


@pytest.mark.slow
# The target (no answer cut, of 50 and more) is bench/echo.py --e2e's: since H39 (a starved
# speaker starts a new answer on the far end, 21697f9) its runs cut 3 of ~340 answers through
# the rig (H40 one, H50 two: AEC3's linear filter losing the echo at a phrase's onset), so two
# answers are both whole only ~98 % of the time. This test is the regression guard: one of
# the two may be cut, not both (the daemon as issue 22 found it cut 2 of 3 at 1x and 3 of 3
# at 5x through such a path; H37-H38, on a loaded machine, 14 of 52). It was a non-strict
# xfail, which passed whatever it saw.
@pytest.mark.parametrize("pace", [1.0, 5.0])
async def test_no_self_interruption_through_the_echo_path(
    room: rigs.PulseRoom,
    echo_rig: EchoRig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pace: float,
) -> None:
    """Speaker → reverberant room → drifting mic with noise (the rig): of two answers with
    nobody talking, at most one is cut."""
    await _two_echo_only_answers_play_whole(room, echo_rig, tmp_path, monkeypatch, pace, 1)


async def _two_echo_only_answers_play_whole(
    room: rigs.PulseRoom,
    rig: EchoRig | None,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    pace: float,
    may_cut: int = 0,
) -> None:
    """The daemon with aec and voice barge-in, two answers at ``pace`` with nobody talking:
    no more than ``may_cut`` of them interrupted (and truncated)."""
    over: dict[str, Any] = echo_scenes.config(rig=rig is not None)
    async with running_daemon(tmp, monkeypatch, over) as h:
        got = await echo_scenes.echo_only_answers(h, _talker(room, rig, tmp), 2, pace)
    print(got)
    assert got.asked == 2, got
    assert got.interrupts <= may_cut and got.truncates <= may_cut, got
    assert got.whole >= got.asked - may_cut, got


# ------------------------------------------------------------------ config


def _problems(data: dict[str, Any]) -> list[str]:
    from agentd.config import ConfigError, from_mapping

    try:
        from_mapping(data)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def test_aec_without_the_library_is_an_error_not_half_duplex(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``echo.mode: aec`` (and local NS / AGC) need the optional extra; without it
    check-config says how to install it, for each key that needs it."""
    import subprocess
    import sys

    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import raises ImportError
    got = _problems(
        {
            "echo": {"mode": "aec"},
            "audio": {"input": {"noise_suppression": 2, "auto_gain": 20}},
        }
    )
    for key in ("echo.mode", "audio.input.noise_suppression", "audio.input.auto_gain"):
        assert any(p.startswith(f"{key}:") and "pip install 'agentd[aec]'" in p for p in got), got
    # the real command line, in a Python where the library cannot be imported
    cfg = tmp_path / "c.yaml"
    cfg.write_text("api: {api_key: sk-test-123}\necho: {mode: aec}\n")
    code = "import sys; sys.modules['pywebrtc_audio'] = None; from agentd.cli import main; raise SystemExit(main())"
    r = subprocess.run(
        [sys.executable, "-c", code, "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1, r
    assert "echo.mode: aec needs the WebRTC audio processing library" in r.stdout + r.stderr
    assert "sk-test-123" not in r.stdout + r.stderr
    monkeypatch.delitem(sys.modules, "pywebrtc_audio")
    assert _problems({"echo": {"mode": "aec"}}) == []


def test_voice_barge_in_is_refused_without_a_canceller() -> None:
    for mode in ("half_duplex", "off"):
        (p,) = _problems({"echo": {"mode": mode, "barge_in": "voice"}})
        assert p.startswith("echo.barge_in: voice needs echo.mode: aec") and mode in p, p
    assert _problems({"echo": {"mode": "aec", "barge_in": "voice"}}) == []


def test_server_noise_reduction_is_openai_ga_only_and_reaches_the_session() -> None:
    from agentd.config import from_mapping
    from agentd.realtime import client_events as ce
    from agentd.realtime.codec import codec_for

    (p,) = _problems({"api": {"dialect": "xstar", "noise_reduction": "far_field"}})
    assert p.startswith("api.noise_reduction: only the OpenAI GA dialect"), p
    assert _problems({"api": {"noise_reduction": "loud"}})  # not a choice
    cfg = from_mapping({"api": {"noise_reduction": "near_field"}})
    settings = ce.SessionSettings.of(cfg.api, cfg.agent, cfg.turn)
    import json

    frame = json.loads(codec_for("openai", "pi").encode(ce.SessionUpdate(settings)))
    assert frame["session"]["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    plain = from_mapping({})
    frame = json.loads(
        codec_for("openai", "pi").encode(
            ce.SessionUpdate(ce.SessionSettings.of(plain.api, plain.agent, plain.turn))
        )
    )
    assert "noise_reduction" not in frame["session"]["audio"]["input"]


# ------------------------------------------------------------------ the canceller


def test_frames_that_are_not_whole_10_ms_blocks_are_refused_not_a_crash() -> None:
    from agentd.audio.echo import EchoCanceller, EchoSetup
    from agentd.audio.frame import AudioFrame

    ec = EchoCanceller(EchoSetup(aec=True, noise_suppression=2, auto_gain=10))
    for samples in (100, 161, 1):
        with pytest.raises(ValueError, match="whole 10 ms blocks"):
            ec.process(AudioFrame(bytes(2 * samples), 16000))
    with pytest.raises(ValueError, match="16 kHz"):
        ec.process(AudioFrame(bytes(960), 48000))
    assert ec.process(AudioFrame(bytes(640), 16000)).samples == 320  # still works


def test_far_end_is_zeros_while_idle_and_drops_what_never_played() -> None:
    import numpy as np

    from agentd.audio.echo import FarEnd

    far = FarEnd(lead_s=0.0)
    assert not far.take(160, 10.0).any()
    tone = (np.sin(np.arange(4800) / 5) * 8000).astype(np.int16)  # 100 ms at 48 kHz
    far.written(tone, 48000, 10.05)  # leaves the speaker 40 ms after the frame below
    got = far.take(1600, 10.01)  # the microphone's next 100 ms
    assert not got[:600].any() and got[700:].any()  # zeros until it plays, then the tone
    assert far.take(1600, 10.11)[:500].any()  # its last 40 ms come with the next frame
    far.written(tone, 48000, 10.2)
    far.dropped(10.15)  # a flush before it played: ALSA dropped it, it never plays
    assert not far.take(1600, 10.15).any()


def test_a_frame_waits_for_a_far_end_not_written_yet_but_not_for_a_stopped_one() -> None:
    """At 1x delivery the take can run ahead of Playback's writes (issue 22, H71: holes of
    2-16 ms in AEC3's reference where the speaker played sound, and answers cut on the echo
    they left): owed_s says how long the next take must wait for its far end; nothing written
    for longer than HOLD_MAX_S is a device that stopped, not a late write: no wait."""
    import numpy as np

    from agentd.audio.echo import HOLD_MAX_S, FarEnd

    rng = np.random.default_rng(3)
    sig = (rng.standard_normal(16000) * 3000).astype(np.int16)
    far = FarEnd(lead_s=0.0)
    assert far.owed_s(320) == 0  # no microphone clock yet
    far.written(sig[:1600], 16000, 10.0)  # 100 ms, leaving the speaker from 10.0
    for k in range(5):  # the microphone's frames up to 10.1
        assert far.owed_s(320) == 0
        assert far.take(320, 10.0 + k * 0.02).all()
    owed = far.owed_s(320)  # [10.1, 10.12): not written yet
    assert 0.02 - 1e-6 <= owed < HOLD_MAX_S
    assert far.short == 0
    far.written(sig[1600:3200], 16000, 10.1)  # the writer catches up
    assert far.owed_s(320) == 0
    got = far.take(320, 10.1)
    assert np.array_equal(got, sig[1600:1920])  # no hole: sample for sample
    for k in range(6, 12):  # the writer stops: the far end falls behind
        far.take(320, 10.0 + k * 0.02)
    assert far.short > 0  # (holes handed as zeros, counted)
    assert far.owed_s(320) == 0  # 40 ms and more missing: no wait


def test_a_far_end_written_to_the_sample_owes_nothing_at_any_clock_reading() -> None:
    """A frame ending exactly where the far end ends is owed nothing: the sums placing both
    carry float noise (1e-11 s at a monotonic clock of days), which held such frames (the
    daemon's hold test failed in CI at a clock reading of 65628.84 s) and counted them short."""
    import numpy as np

    from agentd.audio.echo import FarEnd

    sig = (np.random.default_rng(5).standard_normal(1600) * 3000).astype(np.int16)
    starts = [65628.837564358, *np.random.default_rng(6).uniform(1e3, 1e6, 200)]
    owed = []
    for t0 in starts:
        far = FarEnd(lead_s=0.0)
        far.written(sig, 16000, float(t0))  # 100 ms
        for k in range(5):  # the microphone's frames up to its end, exactly
            owed.append(far.owed_s(320))
            far.take(320, float(t0) + k * 0.02)
        assert far.short == 0, t0
    assert not any(owed), [o for o in owed if o]


def test_far_end_after_a_drop_hands_over_the_next_streams_audio() -> None:
    """What the resampler held back of a dropped stream never played: it must not come out
    at the old stream's end, ahead of the next stream's audio (take() would stop there and
    hand the canceller zeros for the new answer's echo)."""
    import numpy as np

    from agentd.audio.echo import FarEnd

    far = FarEnd(lead_s=0.0)
    tone = (np.sin(np.arange(9600) / 5) * 8000).astype(np.int16)  # 200 ms at 48 kHz
    far.written(tone, 48000, 10.0)
    far.dropped(10.05)  # 50 ms of it played, the rest was dropped
    far.written(tone, 48000, 10.06)  # the next stream starts right after
    got = far.take(1600, 10.06)  # the microphone's next 100 ms
    assert np.count_nonzero(got) > 1400  # the new stream's tone, from its start


def test_far_end_silence_stays_zeros_and_skipping_it_keeps_the_sound_in_place() -> None:
    """A continuous stream writes silence between answers: past SKIP_SILENT_S of it the
    resampler is not called (zeros are placed instead), yet the sound after it lands on
    the same samples as through the resampler all along, and silence stays exact zeros
    (no dither: the bypass and the aligner look for them)."""
    import numpy as np

    from agentd.audio.echo import SKIP_SILENT_S, FarEnd
    from agentd.audio.resample import StreamResampler

    rate = 44100  # chunk sizes that do not divide into 16 kHz samples
    rng = np.random.default_rng(5)
    sound = (rng.standard_normal(rate // 2) * 3000).astype(np.int16)
    sig = np.concatenate([sound, np.zeros(rate, np.int16), sound[::-1]])
    far = FarEnd(lead_s=0.0)
    i = 0
    for n in rng.integers(300, 2000, 1000):
        if i >= sig.size:
            break
        far.written(sig[i : i + n], rate, i / rate)
        i += int(n)
    got = far.recent()  # (less what the resampler still holds back: up to 38 ms)
    rs = StreamResampler(rate, 16000, quality="MQ")
    want = np.concatenate([rs.process_pcm(sig), rs.process_pcm(np.zeros(0, np.int16), True)])
    assert far._skipped > (0.7 - SKIP_SILENT_S) * rate  # most of it (not its ends)
    quiet = slice(16000 // 2 + 1600, 16000 * 3 // 2 - 1600)
    assert not got[quiet].any()  # exact zeros, not the int16 engine's dither
    # (each holds back its own few ms at the end)
    n = min(got.size, want.size)
    assert n > want.size - 700
    assert np.abs(got[:n].astype(int) - want[:n]).max() <= 1  # sample for sample


def test_far_end_keeps_its_timing_through_bursts_and_jittered_timestamps() -> None:
    """The reference for a microphone sample is what left the speaker at its capture time,
    however the writer bursts and however the capture timestamps jitter (±20 ms as the
    sound server delivers them): the echo's delay behind it stays put, sample for sample."""
    import numpy as np

    from agentd.audio.echo import FarEnd

    rng = np.random.default_rng(1)
    sig = (rng.standard_normal(16000 * 4) * 3000).astype(np.int16)
    far = FarEnd(lead_s=0.0)
    written = 0
    got = []
    for k in range(180):  # 20 ms microphone frames from t = 100 s
        now = 100.0 + k * 0.02
        while written < min(sig.size, (k + 6) * 320):  # bursts of 100 ms, 80-120 ms ahead
            far.written(sig[written : written + 1600], 16000, 100.0 + written / 16000)
            written += 1600
        stamp = now + rng.uniform(-0.02, 0.02)
        got.append(far.take(320, stamp))
    out = np.concatenate(got)
    lag = next(
        x for x in range(-800, 800) if np.array_equal(out[8000:8400], sig[8000 + x : 8400 + x])
    )
    assert abs(lag) <= 0.02 * 16000  # within the timestamps' jitter
    n = min(out.size, sig.size - lag) - 4000
    assert np.array_equal(out[4000 : 4000 + n], sig[4000 + lag : 4000 + lag + n])  # no slips


def test_aligner_keeps_the_echo_delay_when_the_sound_server_restarts_with_another() -> None:
    """A stream restarted with 20 ms more latency (what PulseAudio did between answers): the
    aligner finds it within a second and the canceller is back to deep cancellation,
    instead of AEC3 re-learning it over ~2 s."""
    import numpy as np

    from agentd.audio.echo import EchoCanceller, EchoSetup
    from agentd.audio.frame import AudioFrame
    from tests import voice_eval

    speech = np.frombuffer(to_int16_(voice_eval._playback(np.random.default_rng(5), 6.0)), "<i2")
    ec = EchoCanceller(EchoSetup(aec=True))
    assert ec.aligner is not None
    t0 = 50.0
    residual = []
    for part, (start, delay) in enumerate(((0.0, 0.015), (8.0, 0.035))):
        play_at = t0 + start
        ec.far.written(speech, 16000, play_at)
        d = int(delay * 16000)
        mic = np.concatenate([np.zeros(d, np.int16), speech // 2])
        frames = mic[: mic.size // 320 * 320].reshape(-1, 320)
        for k, f in enumerate(frames):
            y = ec.process(AudioFrame(f.tobytes(), 16000, timestamp=play_at + k * 0.02)).array()
            if part == 1 and 1.0 <= k * 0.02 < 5.0:
                residual.append(np.mean(y.astype(float) ** 2))
    assert ec.aligner.moves == 1, ec.aligner.measured  # 15 ms is near enough the 20 ms target
    echo = np.mean((speech // 2).astype(float) ** 2)
    erle = 10 * np.log10(echo / max(np.mean(residual), 1e-9))
    assert erle >= 25, erle
    assert ec.settled  # the moved reference was confirmed on the same stream


def test_canceller_is_bypassed_while_nothing_plays_and_resumes_seamlessly() -> None:
    """While the far end has been silent IDLE_AEC_S the canceller is not called (the CPU it
    costs with nothing to cancel) and the frames pass delayed exactly as AEC3 delays them;
    on the way back AEC3 is handed the last 10 ms first, so its output goes on from there
    (without that its first block is stale audio from when the bypass began)."""
    import numpy as np

    from agentd.audio.echo import AEC_DELAY, IDLE_AEC_S, EchoCanceller, EchoSetup, library
    from agentd.audio.frame import AudioFrame

    rng = np.random.default_rng(3)
    near = (rng.standard_normal(16000 * 6) * 2000).astype(np.int16)
    # the premise: AEC3's output lags its input by AEC_DELAY samples
    raw = library().EchoCanceller(16000, 1).process(near[:16000], np.zeros(16000, np.int16))
    lags = [float(np.dot(raw[k : k + 8000], near[:8000].astype(float))) for k in range(300)]
    assert int(np.argmax(lags)) == AEC_DELAY
    far = np.zeros_like(near)
    far[:8000] = (rng.standard_normal(8000) * 3000).astype(np.int16)  # plays 0-0.5 s
    back = 80000  # and again from 5 s on
    far[back : back + 8000] = (rng.standard_normal(8000) * 3000).astype(np.int16)
    ec = EchoCanceller(EchoSetup(aec=True))
    ec.far.written(far, 16000, 0.0)
    out = np.concatenate(
        [
            ec.process(AudioFrame(near[i : i + 320].tobytes(), 16000, timestamp=i / 16000)).array()
            for i in range(0, near.size, 320)
        ]
    )
    idle_s = (back - 8000) / 16000 - IDLE_AEC_S
    assert ec.bypassed * 0.02 == pytest.approx(idle_s, abs=0.03)
    delayed = np.concatenate([np.zeros(AEC_DELAY, np.int16), near[:-AEC_DELAY]])
    s0 = int((0.5 + IDLE_AEC_S) * 16000) + 640
    assert np.array_equal(out[s0 : back - 320], delayed[s0 : back - 320])  # untouched
    for i in range(back - 480, back + 160, 160):  # through the switch back, 10 ms blocks
        r = float(np.corrcoef(out[i : i + 160], delayed[i : i + 160])[0, 1])
        assert r > 0.95, (i, r)


def to_int16_(x: object) -> bytes:
    from agentd.audio.pcm import to_int16

    return to_int16(x)  # type: ignore[arg-type]


def through(ec: Any, far: Any, mic: Any, t: float) -> Iterator[int]:
    """``far`` (int16, 16 kHz) handed to the canceller ``ec`` as it plays from ``t`` and
    ``mic`` cancelled against it, 20 ms at a time; yields each frame's index once done."""
    from agentd.audio.frame import AudioFrame

    for k in range(far.size // 320):
        at = t + k * 0.02
        ec.far.written(far[k * 320 : (k + 1) * 320], 16000, at)
        ec.process(AudioFrame(mic[k * 320 : (k + 1) * 320].tobytes(), 16000, timestamp=at))
        yield k


def test_playback_taps_exactly_what_alsa_took(tmp_path: Path) -> None:
    """The far end is the int16 audio handed to ALSA (the file-backed `testplay` PCM holds
    exactly that), at 16 kHz: the same signal, sample-aligned after resampling."""
    import time

    import numpy as np

    from agentd.audio.alsa import Playback
    from agentd.audio.echo import FarEnd
    from agentd.audio.pcm import to_float, to_int16
    from agentd.audio.resample import StreamResampler
    from agentd.config import OutputSettings

    rigs.PLAYBACK_FILE.write_bytes(b"")
    pb = Playback(OutputSettings(device="testplay", rate=48000, buffer_ms=60), 24000)
    far = pb.far_end = FarEnd()
    pb.start()
    try:
        pcm = rigs.espeak("the far end is what the card played", 24000, tmp_path / "x")
        pb.play(pcm.astype("<i2").tobytes(), "i1", last=True)
        deadline = time.monotonic() + 10
        while pb.busy() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        pb.stop()
    played = np.frombuffer(rigs.PLAYBACK_FILE.read_bytes(), "<i2")
    want = np.frombuffer(to_int16(StreamResampler(48000, 16000, "MQ").process(played)), "<i2")
    assert far.written_samples == pytest.approx(want.size, abs=200), (
        far.written_samples,
        want.size,
    )
    got = far.recent()  # the newest FAR_KEEP_S: nothing took from it meanwhile
    n = min(got.size, want.size)
    assert n >= 16000, n
    a, b = to_float(got[-n:].tobytes()), to_float(want[-n:].tobytes())
    assert float(np.corrcoef(a, b)[0, 1]) > 0.99


def test_erle_and_double_talk_on_the_echo_path(tmp_path: Path) -> None:
    """Component path (issue 22 point 3): the rig's loudspeaker/room/drift/noise applied to
    espeak speech, cancelled with the far end handed over as the writer hands it."""
    from bench import echo as bench_echo

    m = bench_echo.erle_figures(seconds=12)
    assert m["erle_median_db"] >= 30 and m["erle_p10_db"] >= 20, m
    assert m["erle_onset_db"] >= 20, m
    d = bench_echo.double_talk_figures()
    # issue 22's targets are ≤ 10 dB and ≥ 0.8, the medians over 8 phrases; measured
    # 6.3 dB and 0.77 here at the canceller's 8 ms delay (0.8 not met: AEC3's echo
    # suppressor shapes the near end while the far end plays, and the bindings expose none
    # of its settings). Guarded at what holds.
    assert d["attenuation_db_ser_m10"] <= 10 and d["correlation_ser_0"] >= 0.7, d


def test_the_daemons_canceller_runs_aec3s_tuned_config_and_keeps_the_near_end() -> None:
    """With agentd's build of pywebrtc-audio (scripts/test builds it; the stock wheel takes no
    config) the daemon's canceller runs AEC3_CONFIG: on the component scene without drift the
    cancelled double talk correlates >= 0.8 with the clean near end at 0 dB (issue 22's
    target). Measured 0.87; the same build with AEC3's defaults 0.75."""
    from agentd.audio.echo import EchoCanceller, EchoSetup, configurable, library
    from bench import echo as bench_echo

    assert configurable(library()), "needs agentd's patched pywebrtc-audio (scripts/test)"
    assert EchoCanceller(EchoSetup(aec=True)).tuned
    assert not EchoCanceller(EchoSetup(noise_suppression=2)).tuned  # no AEC3: nothing tuned
    d = bench_echo.double_talk_figures(drift_ppm=0.0)
    assert d["correlation_ser_0"] >= 0.8 and d["attenuation_db_ser_m10"] <= 10, d


def test_aec3_is_handed_a_delay_beyond_the_aligners_reach_once() -> None:
    """AEC3_CONFIG's AEC3 sees only the delay it is handed plus its 160 ms filter: an echo the
    Aligner keeps at TARGET_S needs none; the rig's (~0.2 s behind the reference: its output
    buffer) is handed over less the headroom, in 4 ms steps, and moved again only when off
    once the echo is outside AEC3_WITHIN_MS of the filter: earlier, its direct path would
    not be cancelled at all (the rig drops 20 ms of backlog on a loaded machine); within,
    the estimate's jitter moves nothing (each move shifts the far end under the filter)."""
    from agentd.audio.echo import AEC3_HEADROOM_MS, AEC3_WITHIN_MS, aec3_delay_ms

    assert AEC3_WITHIN_MS == (20, 100) and AEC3_HEADROOM_MS == 40
    assert aec3_delay_ms(None, 0) == 0 and aec3_delay_ms(None, 180) == 180  # not found yet
    assert aec3_delay_ms(2, 0) == aec3_delay_ms(4, 0) == 0  # the plain room (TARGET_S)
    assert aec3_delay_ms(0, 0) == 0  # (earlier than the filter's start: nothing earlier)
    assert aec3_delay_ms(22, 0) == 180  # the rig: the echo 40 ms into the filter
    assert aec3_delay_ms(23, 180) == aec3_delay_ms(26, 180) == aec3_delay_ms(20, 180) == 180
    # backlog dropped: the echo 10 ms into the filter is too close to its start (through
    # the rig the linear filter then removed ~10 dB less than converged, for minutes)
    assert aec3_delay_ms(19, 180) == 148
    assert aec3_delay_ms(28, 180) == 180 and aec3_delay_ms(29, 180) == 248  # 110 ms in
    assert aec3_delay_ms(2, 180) == 0  # the aligner moved the reference onto the echo


def _searches() -> tuple[Any, Callable[[int], None]]:
    """A canceller of agentd's build, and what one of its echo estimate's searches that
    found the echo (``blocks`` behind the reference) leaves behind: the delay handed on."""
    from agentd.audio.echo import EchoCanceller, EchoSetup

    ec = EchoCanceller(EchoSetup(aec=True))
    al = ec.aligner
    assert ec.tuned and al is not None, "needs agentd's patched pywebrtc-audio (scripts/test)"

    def search(blocks: int) -> None:
        assert al is not None
        al.echo_delay, al.echo_found = blocks, al.echo_found + 1
        ec._hand_delay()

    return ec, search


def test_a_jump_of_the_echo_estimate_is_not_handed_while_the_filter_removes_the_echo() -> None:
    """In one of the component path's rooms the echo estimate matched a phrase 40 ms off the
    echo twice in a row: handed that as a jump, AEC3 reset a filter that took a median 15 dB
    off and placed the echo 2-12 ms into the new one, where it never fitted again (answers
    cut for a minute, bench/echo.py --slips). While the linear filter takes JUMP_FIT_DB off
    the loud echo (FIT_MIN frames since the last delay handed), a jump is not handed."""
    from agentd.audio.echo import FIT_MIN, JUMP_FIT_DB, JUMP_SEARCHES, aec3_place_ms

    for fit, handed in ((JUMP_FIT_DB + 5, False), (JUMP_FIT_DB - 5, True)):
        ec, search = _searches()
        for b in (24, 24):
            search(b)
        assert ec.stream_delay_ms == aec3_place_ms(24) and ec.delay_moves == 1
        ec._fit.extend([fit] * FIT_MIN)
        for b in (24,) * JUMP_SEARCHES + (28, 28):  # 40 ms later, inside the filter
            search(b)
        assert (ec.jumps, ec.refused) == ((1, 0) if handed else (0, 1)), fit
        assert (ec.stream_delay_ms == aec3_place_ms(28)) is handed
        assert not ec._fit if handed else len(ec._fit) == FIT_MIN  # (a new filter: anew)
    ec, search = _searches()  # too few frames to say: handed, as before
    for b in (24, 24) + (24,) * JUMP_SEARCHES:
        search(b)
    ec._fit.extend([JUMP_FIT_DB + 5] * (FIT_MIN - 1))
    search(28)
    search(28)
    assert ec.jumps == 1 and ec.refused == 0


def test_a_lone_search_of_the_echo_estimate_hands_aec3_no_delay() -> None:
    """A new delay is handed to AEC3 only when two of the echo estimate's searches in a row
    ask for it (AEC3_AGREE_MS): in the plain room a lone search found 0.1 s or more, and
    handing it put the echo (20 ms) before AEC3's filter: the answer cut itself."""
    ec, search = _searches()
    search(15)  # a match of something else: 150 ms
    search(2)  # the room's own 20 ms again
    search(16)
    assert ec.stream_delay_ms == 0 and ec.delay_moves == 0
    search(22)  # the rig's: two in a row, 10 ms apart
    search(23)
    assert ec.stream_delay_ms == 188 and ec.delay_moves == 1


@pytest.mark.parametrize("noise_db", [20.0, 24.0])
def test_a_weak_match_far_from_the_echo_held_does_not_move_it(noise_db: float) -> None:
    """The echo estimate moves more than ECHO_MOVE_BLOCKS only on a clear match (ECHO_MOVE_R):
    through the rig a search with a talker in its window found 2 blocks at r 0.62 where the
    echo sat at 25, and later read as a jump that reset AEC3 in a user's speech. Found first,
    or near the echo held, ECHO_MIN_R is enough; clear, it moves."""
    from agentd.audio.echo import (
        ECHO_FLOOR_DB,
        ECHO_HIST,
        ECHO_MIN_R,
        ECHO_MOVE_R,
        Aligner,
        FarEnd,
    )

    rng = np.random.default_rng(4)
    far = np.full(ECHO_HIST, ECHO_FLOOR_DB)
    i = 0
    while i < ECHO_HIST:  # speech-like: bursts of 0.1-0.4 s at -45..-20 dBFS, short pauses
        n = int(rng.integers(10, 40))
        far[i : i + n] = rng.uniform(-45, -20, size=min(n, ECHO_HIST - i))
        i += n + int(rng.integers(3, 15))
    z = rng.normal(0, 1, ECHO_HIST)

    def search(held: int | None, noise: float, at: int = 2) -> Aligner:
        near = np.full(ECHO_HIST, -75.0)
        near[at:] = far[:-at] - 7  # the echo, `at` blocks behind, 7 dB down, and noise
        al = Aligner(FarEnd())
        al._env_far, al._env_near = list(far), list(np.maximum(near + noise * z, -75.0))
        al.echo_delay, al.echo_gain_db = held, -7.0
        assert al._find_echo()
        return al

    weak = search(25, noise_db)
    assert ECHO_MIN_R <= weak.echo_r < ECHO_MOVE_R  # (the case: used, were it near)
    assert weak.echo_delay == 25 and weak.echo_found == 0
    assert search(None, noise_db).echo_delay == 2  # found first: taken
    assert search(3, noise_db).echo_delay == 2  # a block from the one held: taken
    clear = search(25, 0.0)
    assert clear.echo_r >= ECHO_MOVE_R and clear.echo_delay == 2  # clear: it moved


def test_an_echo_that_crept_to_the_filters_edge_is_handed_between_answers() -> None:
    """A new delay resets AEC3's filters and the echo leaks until they re-learn it: for an
    echo that only crept to the filter's edge, inside it still (the rig's slid 40 ms over
    minutes), it waits until the far end has been silent ANSWER_GAP_S (through the rig,
    handed 277 ms into a user's speech, it cost that barge-in). Outside the filter: at once."""
    from agentd.audio.echo import ANSWER_GAP_S, aec3_place_ms

    ec, search = _searches()
    for b in (22, 23):
        search(b)
    assert ec.stream_delay_ms == 188 and ec.delay_moves == 1
    for b in (19, 19):  # 2 ms into the filter: a new delay is asked for ...
        search(b)
    assert ec.stream_delay_ms == 188 and ec.delay_moves == 1  # ... not handed mid-answer
    frame = np.zeros(320, np.int16)
    sound = np.full(320, 3000, np.int16)
    ec._cancel(frame, sound)  # the answer still sounds
    for _ in range(round(ANSWER_GAP_S * 50) - 1):
        ec._cancel(frame, frame)
        assert ec.stream_delay_ms == 188
    ec._cancel(frame, frame)  # the far end silent ANSWER_GAP_S: between answers
    assert ec.stream_delay_ms == aec3_place_ms(19) == 148 and ec.delay_moves == 2
    for b in (22, 22):  # asked for, then the echo came back inside: nothing is handed
        search(b)
    search(17)
    search(17)
    search(20)
    for _ in range(round(ANSWER_GAP_S * 50) + 1):
        ec._cancel(frame, frame)
    assert ec.stream_delay_ms == 148 and ec.delay_moves == 2
    for b in (33, 33):  # beyond the filter (330 - 148 ms): at once
        search(b)
    assert ec.stream_delay_ms == aec3_place_ms(33) and ec.delay_moves == 3


def test_aec3_is_handed_its_delay_afresh_when_the_echo_estimate_jumps() -> None:
    """An echo path that moves at once (the rig dropping 20 ms of backlog) but stays inside
    AEC3_WITHIN_MS of the filter left AEC3's filter fitted to the old path, and through the
    rig its linear output sat ~10-13 dB under the echo expected for minutes: a jump of the
    estimate (JUMP_BLOCKS over JUMP_SEARCHES) places the delay afresh at once, which resets
    AEC3's filters. A block's flicker and a slow drift do not."""
    from agentd.audio.echo import (
        AEC3_WITHIN_MS,
        JUMP_SEARCHES,
        aec3_place_ms,
        jumped,
    )

    assert not jumped([23, 24] * JUMP_SEARCHES)  # the echo between two blocks
    assert not jumped([23, 23, 24, 23, 24, 24, 24, 25, 24, 25, 25, 25, 26])  # a slow drift
    assert not jumped([26] * JUMP_SEARCHES + [24])  # one search is no jump
    assert not jumped([26] * JUMP_SEARCHES + [24, 22])  # nor two that disagree
    assert jumped([26, 27, 26, 26, 27, 26, 24, 24])  # the rig's: 20 ms earlier
    assert jumped([22] * JUMP_SEARCHES + [16, 17])

    ec, search = _searches()
    for b in (24, 24):
        search(b)
    assert ec.stream_delay_ms == aec3_place_ms(24) == 200 and ec.delay_moves == 1
    for b in (25, 26, 26, 27, 26, 27, 26, 26, 27, 26):  # drifting later, inside the filter
        search(b)
        assert ec.stream_delay_ms == 200
    assert AEC3_WITHIN_MS[0] <= 240 - 200 <= AEC3_WITHIN_MS[1]  # 24 is inside the filter ...
    search(24)
    assert ec.stream_delay_ms == 200
    search(24)  # ... but the echo jumped there: placed afresh, where it was placed at
    # first, but the filter has followed the echo away since: 4 ms more headroom (a reset)
    assert ec.stream_delay_ms == 196 and ec.jumps == 1 and ec.delay_moves == 2
    for b in (25, 26, 26, 27, 26, 27, 22, 22):
        search(b)
    assert ec.stream_delay_ms == aec3_place_ms(22) == 180 and ec.jumps == 2
    assert ec.delay_moves == 3
    for b in (22, 23, 22, 23, 22, 23, 22, 23, 22, 23):  # then it flickers: left alone
        search(b)
    assert ec.stream_delay_ms == 180 and ec.jumps == 2
    plain, search = _searches()  # the Aligner keeps the echo at 20 ms
    for b in (2,) * JUMP_SEARCHES + (4, 4):
        search(b)
    assert plain.stream_delay_ms == 0 and plain.jumps == 0


def test_path_watch_says_a_fitted_filter_lost_the_echo_and_not_a_user() -> None:
    """PathWatch (pure): a filter that has shown it removes the echo, then PATH_N of PATH_M
    loud frames with the linear output within PATH_DB of a microphone no louder than the
    echo expected, says the path moved; a user over the echo, a fresh filter still learning,
    or a run of such frames broken by quiet ones says nothing."""
    from agentd.audio.echo import PATH_M, PATH_N, PathWatch

    def p(dbfs: float) -> float:
        return float(10 ** (dbfs / 10))

    def frames(w: PathWatch, raw: float, linear: float, echo: float, n: int) -> list[bool]:
        return [w.frame(p(raw), p(linear), p(echo)) for _ in range(n)]

    w = PathWatch()
    assert not any(frames(w, -30, -30, -28, 3 * PATH_M))  # a fresh filter: removes nothing
    assert not w.armed
    assert not any(frames(w, -30, -45, -28, PATH_M)) and w.armed  # fitted: 15 dB off
    assert not any(frames(w, -25, -26, -30, 3 * PATH_M))  # a user 5 dB over the echo
    assert not any(frames(w, -30, -31, -28, PATH_N - 1))
    assert not any(frames(w, -60, -60, -60, 1))  # a pause (quiet): the run starts anew
    lost = frames(w, -30, -31, -28, PATH_M)  # (judged once PATH_M frames are in)
    assert lost == [False] * (PATH_M - 1) + [True]
    assert not w.armed  # (then the new filter shows itself anew)
    w = PathWatch()
    frames(w, -30, -45, -28, PATH_M)
    assert not any(frames(w, -30, -36, -28, 3 * PATH_M))  # 6 dB off: the filter still works
    assert any(frames(w, -30, -29, -28, PATH_M))  # (it adds energy: lost too)


def test_aec3s_linear_output_is_the_high_passed_microphone_linear_delay_later() -> None:
    """SlipWatch's premise: with nothing to cancel, the linear output (agentd's build) is the
    microphone through webrtc's capture high-pass filter (HPF_B, HPF_A), LINEAR_DELAY samples
    later (the suppressed output: AEC_DELAY). Taken as the plain microphone, the high-pass
    filter's phase made a loud talker look like echo slipped 2-7 samples (the far end was
    moved under talkers at 0 and +10 dB SER 3-14 times in 40 s)."""
    from agentd.audio.echo import (
        AEC3_CONFIG,
        LINEAR_DELAY,
        _hpf_response,
        exports_linear,
        library,
    )

    lib = library()
    if not exports_linear(lib):
        pytest.skip("needs agentd's AEC3 build (its linear output)")
    aec = lib.EchoCanceller(16000, 1, 0, config=AEC3_CONFIG)
    near = (np.random.default_rng(0).standard_normal(16000 * 2) * 2000).astype(np.int16)
    lin = []
    for i in range(0, near.size, 320):
        aec.process(near[i : i + 320], np.zeros(320, np.int16))
        lin.append(aec.linear())
    out = np.concatenate(lin).astype(np.float64)
    size = 1 << 16
    hp = np.fft.irfft(np.fft.rfft(near.astype(np.float64), size) * _hpf_response(size), size)
    lags = [float(np.dot(out[k + 8000 : k + 24000], near[8000:24000])) for k in range(200)]
    assert int(np.argmax(lags)) == LINEAR_DELAY
    got = out[LINEAR_DELAY + 8000 :]
    r_hp = float(np.corrcoef(got, hp[8000 : near.size - LINEAR_DELAY])[0, 1])
    r_plain = float(np.corrcoef(got, near[8000 : near.size - LINEAR_DELAY])[0, 1])
    # what neither explains of it: a tenth or less of what the plain microphone leaves
    assert 1 - r_hp**2 < (1 - r_plain**2) / 10, (r_hp, r_plain)


def test_slip_watch_says_the_echo_moved_under_the_filter_and_by_how_much() -> None:
    """SlipWatch (pure): frames whose microphone is the filter's echo estimate moved by 8,
    200 or -400 samples are said to be that echo, and the second such frame gives the lag to
    move the far end by (either way); a user over a working filter, a move of one sample, or
    two matches further apart than SLIP_WITHIN move nothing."""
    from agentd.audio.echo import LINEAR_DELAY, SLIP_WITHIN, SlipWatch, _hpf_response

    rng = np.random.default_rng(5)
    size = 1 << 15
    spectrum = np.fft.rfft(rng.standard_normal(size) * 3000)
    spectrum[np.fft.rfftfreq(size, 1 / 16000) > 4000] = 0  # speech-like: no top octave
    sound = np.fft.irfft(spectrum, size)
    user = np.fft.irfft(np.fft.rfft(rng.standard_normal(size) * 3000) * (spectrum != 0), size)
    n = 320

    def frames(w: SlipWatch, lag: int, count: int, talk: float = 0.0) -> list[tuple[bool, int]]:
        """``count`` 320-sample frames of microphone whose echo comes ``lag`` samples after
        the filter's estimate of it (and a user), each heard with its linear output (the
        microphone through the high-pass filter, LINEAR_DELAY earlier, less the estimate)
        and asked of (SlipWatch.frame)."""
        at = 8000
        mic = sound[at - lag : at - lag + count * n] + talk * user[: count * n]
        hp = np.fft.irfft(np.fft.rfft(mic, 2 * size) * _hpf_response(2 * size), 2 * size)
        estimate = sound[at - LINEAR_DELAY : at - LINEAR_DELAY + count * n]
        linear = np.concatenate((np.zeros(LINEAR_DELAY), hp))[: count * n] - estimate
        got = []
        for k in range(count):
            w.heard(mic[k * n : (k + 1) * n], linear[k * n : (k + 1) * n])
            got.append(w.frame())
        return got

    for lag in (8, 200, -400):  # the echo later (the far end to be handed later), earlier
        matched = [g for g in frames(SlipWatch(), lag, 5) if g[0]]
        assert matched[:2] == [(True, 0), (True, lag)], (lag, matched)
    assert not any(m for m, _ in frames(SlipWatch(), 0, 5, talk=1.0))  # a user, filter working
    assert not any(m for m, _ in frames(SlipWatch(), 1, 5))  # a sample: AEC3 follows that
    w = SlipWatch()
    for _ in range(6):  # a match that waits for a second
        if frames(w, 8, 1) == [(True, 0)]:
            break
    assert w.last == 8
    for _ in range(SLIP_WITHIN // n + 1):  # a while of frames not asked of
        w.heard(np.zeros(n), np.zeros(n))
    assert w.last is None  # too long ago to agree with the next


def test_an_echo_that_slips_a_fraction_of_a_millisecond_does_not_cut_the_answer() -> None:
    """The onset leak of the end-to-end runs, on the component path (voice_eval.score_slips):
    the echo path moving 4 or 16 samples in a pause mid-answer cut 12 and 18 of 20 echo-only
    answers before SlipWatch (AEC3's linear filter took nothing off the echo, the suppressor
    let it through voiced, at the next phrase); now the far end moves with it."""
    from agentd.audio.echo import EchoSetup
    from tests import voice_eval

    if not EchoCanceller(EchoSetup(aec=True)).linear_out:
        pytest.skip("needs agentd's AEC3 build (its linear output)")
    for slip in (4, 16):
        cut, after = voice_eval.score_slips(3, 20, slip)
        assert cut <= 2, (slip, cut, after)
    # the onset's first, quiet frames judged too (SLIP_ECHO_DB, SLIP_RAW_DB): judged only at
    # PathWatch's levels, AEC3's filter had adapted to the slipped echo before SlipWatch saw
    # it, and 1 and 20 ms cut 2 and 3 of this room's 20 answers
    cut = sum(voice_eval.score_slips(7, 20, slip)[0] for slip in (16, 320))
    assert cut <= 2, cut


def _room_scene(
    seed: int, step_at: float | None, talk_db: float | None, step_ms: int = 20
) -> tuple[list[float], list[float], EchoCanceller]:
    """40 s of answers through the echo path rig's room (0.23 s bulk delay, as the rig's)
    cancelled as the daemon's path does (tests/voice_eval.cancelling); ``step_at``: the
    echo arrives ``step_ms`` earlier from then on (the rig dropping backlog); ``talk_db``: a
    talker at that SER for 1.5 s of every 4 s from 10 s. The times PathWatch fired, those
    SlipWatch moved the far end, and the canceller."""
    from agentd.audio.echo import EchoSetup
    from tests import corpus, voice_eval

    secs, rate = 40.0, 16000
    play = voice_eval._playback(np.random.default_rng(seed), secs)
    bulk = np.zeros(int(0.23 * rate), np.float32)
    mic = np.concatenate((bulk, voice_eval.echo_at_mic(play, seed=seed)))[: play.size]
    if step_at is not None:
        i = int(step_at * rate)
        mic = np.concatenate((mic[:i], voice_eval.moved(mic[i:], -rate * step_ms // 1000)))
    if talk_db is not None:
        on = np.zeros_like(mic, bool)
        for t in np.arange(10.0, secs - 2, 4.0):
            on[int(t * rate) : int((t + 1.5) * rate)] = True
        # other sentences than the answer's: the same ones at the same moment (seed 3 drew
        # the same first sentence for both) are the answer itself, heard twice, not a user
        rng = np.random.default_rng(seed + 50)
        said = [corpus.paused(t, rng) for t in corpus.PAUSED_PHRASES]
        talk = np.concatenate(said * (int(secs * rate) // sum(x.size for x in said) + 1))
        talk = talk[: mic.size] * on
        gain = np.sqrt(np.mean(mic[on] ** 2) / np.mean(talk[on] ** 2)) * 10 ** (talk_db / 20)
        mic = mic + talk * gain
    ec = EchoCanceller(EchoSetup(aec=True))
    if not ec.tuned:
        pytest.skip("PathWatch needs agentd's AEC3 build (its linear output)")
    fired: list[float] = []
    slipped: list[float] = []
    for f in voice_eval.cancelling(mic, play, 20, ec):
        if ec.path_moves != len(fired):
            fired.append(f.timestamp)
        if ec.slips != len(slipped):
            slipped.append(f.timestamp)
    return fired, slipped, ec


def test_the_echo_path_moving_under_aec3s_filter_is_found_and_a_talker_is_not() -> None:
    """The rig's silent backlog drop (the echo 20 ms earlier, still inside AEC3's filter,
    with no search of the echo estimate seeing it: three e2e runs had answers cut with
    nobody talking after one) is found by SlipWatch within 0.4 s and the far end moved with
    it, the filter kept (measured: 0.06-0.36 s on five seeds); a drop beyond SlipWatch's
    reach (40 ms) by PathWatch within 0.7 s and AEC3 handed its delay afresh (0.1-0.6 s).
    Answers with no drop, and talkers from -10 to +10 dB SER over them, do neither. The echo
    estimate the delay is placed by was searched before the drop: placed PATH_HEADROOM_MS
    into the filter, the echo, 40 ms earlier, still sits 20 ms or more into it (measured
    20-32 ms on five seeds; 20 ms in, the filter took 7-8 dB off for 50 answers through the
    rig)."""
    from agentd.audio.echo import echo_ms

    for seed in (1, 3):
        fired, slipped, ec = _room_scene(seed, 20.0, None)
        assert fired == [] and len(slipped) == 1 and 20.0 < slipped[0] < 20.4, (seed, slipped)
        assert abs(ec.far.offset * 16000 + 320) <= 2, (seed, ec.far.offset)
        fired, slipped, ec = _room_scene(seed, 20.0, None, step_ms=40)
        assert fired and 20.0 < fired[0] < 20.7 and slipped == [], (seed, fired, slipped)
        assert ec.aligner is not None and ec.aligner.echo_delay is not None
        assert echo_ms(ec.aligner.echo_delay) - ec.stream_delay_ms >= 20, seed
    assert _room_scene(1, None, None)[:2] == ([], [])
    for seed in (1, 3):
        for ser in (-10.0, 0.0, 10.0):
            fired, slipped, _ = _room_scene(seed, None, ser)
            # (SlipWatch before the high-pass filter was reckoned with: 3-14 moves at 0 and
            # +10 dB)
            assert fired == [] and slipped == [], (seed, ser, fired, slipped)


def test_the_aligner_and_the_delay_handed_to_aec3_share_one_two_in_a_row_rule() -> None:
    """A change one measurement asks for waits for the next to agree (TwoInARow): the
    Aligner's moves within ALIGN_TOL_S, the delay handed to AEC3 within AEC3_AGREE_MS."""
    from agentd.audio.echo import (
        AEC3_AGREE_MS,
        ALIGN_TOL_S,
        EchoCanceller,
        EchoSetup,
        TwoInARow,
    )

    rule = TwoInARow(20)
    assert not rule.agree(150) and not rule.agree(20)  # a lone one, then another
    assert rule.agree(35) and rule.pending is None  # the next within 20: act, both spent
    assert not rule.agree(36)  # (spent: starts afresh)
    assert rule.agree(56)  # 20 apart agrees, 21 does not
    assert not rule.agree(77) and not rule.agree(98)
    rule.clear()  # a measurement that asks for no change
    assert not rule.agree(98)
    ec = EchoCanceller(EchoSetup(aec=True))
    assert ec.aligner is not None
    assert ec._delay_pending.tol == AEC3_AGREE_MS and ec.aligner._pending.tol == ALIGN_TOL_S


def test_noise_suppression_gains_on_the_noise_and_keeps_speech_onsets() -> None:
    """Issue 22 point 5: local NS raises speech over noise and loses no onset. Measured
    16.0 dB, onset loss 0.35 dB median / 1.5 dB worst over 8 phrases; unaligned with the
    suppressor's 6 ms delay the same run reads 0.95 / 3.6 dB (the old 3.6 dB figure)."""
    from bench import echo as bench_echo

    m = bench_echo.ns_figures()
    assert m["ns_snr_gain_db"] >= 12, m
    assert m["ns_onset_loss_db"] <= 0.7 and m["ns_onset_loss_worst_db"] <= 2.5, m


def test_canceller_runs_under_the_units_wx_lock() -> None:
    """MemoryDenyWriteExecute=yes: prctl(PR_SET_MDWE) first thing, then the library."""
    import subprocess
    import sys

    code = (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.prctl(65, 1, 0, 0, 0) == 0 and libc.prctl(66, 0, 0, 0, 0) == 1\n"
        "from bench import echo\n"
        "m = echo.erle_figures(seconds=6)\n"
        "assert m['erle_median_db'] >= 30, m\n"
        "print('ok', round(m['erle_median_db'], 1))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=".")
    assert r.returncode == 0 and r.stdout.startswith("ok"), r


def test_voice_barge_in_waits_until_the_streams_echo_delay_is_confirmed() -> None:
    """Echo leaking while a new playback stream's delay is unconfirmed may be as loud as the
    echo itself: no evidence, however loud as a whole (only a band well over the echo
    expected counts there: the test above); the same frames barge in once the stream is
    settled, counted from the settled frames (the cold evidence while just resettled)."""
    from agentd.voice.barge_in import COLD_NEED_MS, BargeInPolicy

    echo = 10 ** (-25 / 10)
    policy = BargeInPolicy()
    heard = [100.0 + 0.02 * i for i in range(200)]
    for h in heard[:60]:  # into the answer's sound, past its onset
        policy.frame(20, False, 1e-8, h, True, echo)
    assert not any(policy.frame(20, True, echo * 2, h, False, echo) for h in heard[60:160])
    fired = [policy.frame(20, True, echo * 2, h, True, echo) for h in heard[160:]]
    assert fired.index(True) == COLD_NEED_MS // 20 - 1


def test_while_an_answer_is_unsettled_only_a_band_well_over_its_echo_counts() -> None:
    """After SlipWatch moved the far end with its echo the answer is unsettled until it
    proves its delay again, and that is what a user talking over it prevents: before, voice
    barge-in was deaf for up to SETTLE_MAX_S (the end-to-end run H60's -5 dB miss;
    bench/echo.py --slips: a user at -5 dB after a 10 ms slip missed 20 of 58 times). The
    echo expected still holds there, so a voiced frame whose loudest band stands
    REFIT_MARGIN_DB over it counts (NEED_MS); nothing less does, and what came before the
    move (the slipped echo's own leak) is no evidence. In any other unsettled state (AEC3
    handed its delay afresh after the path moved, an onset, a dry speaker) the same rule
    holds with UNSETTLED_NEED_MS asked: it was deaf there (the misses of H68-H73)."""
    from agentd.voice.barge_in import NEED_MS, REFIT_MARGIN_DB, UNSETTLED_NEED_MS, BargeInPolicy

    echo = 10 ** (-25 / 10)
    leak = 10 ** (-30 / 10)

    def run(over: float, refitting: bool = True, before: int = 0) -> list[bool]:
        policy = BargeInPolicy()
        heard = iter(100.0 + 0.02 * i for i in range(400))
        for _ in range(60):  # into the answer's sound, past its onset: confirmed
            policy.frame(20, False, 1e-8, next(heard), True, echo)
        for _ in range(before):  # the slipped echo leaking, still settled
            policy.frame(20, True, leak, next(heard), True, echo, over=lambda: 0.0)
        return [
            policy.frame(20, True, leak, next(heard), False, echo, None, lambda: over, refitting)
            for _ in range(10)
        ]

    assert run(REFIT_MARGIN_DB).index(True) == NEED_MS // 20 - 1
    assert not any(run(REFIT_MARGIN_DB - 0.5))  # a leak within it
    # any other unsettled state: the same band, more of it
    assert run(REFIT_MARGIN_DB, refitting=False).index(True) == UNSETTLED_NEED_MS // 20 - 1
    assert not any(run(REFIT_MARGIN_DB - 0.5, refitting=False))
    # the leak before the move counted (three frames of four): not carried into the refit
    assert run(REFIT_MARGIN_DB, before=3).index(True) == NEED_MS // 20 - 1


def test_a_user_talking_after_the_echo_slipped_is_heard() -> None:
    """Component path (voice_eval.score_slip_barge): the echo path moves 20 ms in a pause
    (the rig's backlog drop) and a user talks at -5 dB 0.2-1.2 s later, while SlipWatch finds
    the slip and the answer proves its delay again. Without the refit rule 17 of this
    room's 18 trials (2 answers cut before the user spoke) came more than 1 s late or never
    (median: never); with it 2 (median 0.33 s), and since SlipWatch judges quieter frames 1
    of 19 (1 answer cut before, median 0.37 s)."""
    from agentd.audio.echo import EchoSetup
    from tests import voice_eval

    if not EchoCanceller(EchoSetup(aec=True)).linear_out:
        pytest.skip("needs agentd's AEC3 build (its linear output)")
    delays, early = voice_eval.score_slip_barge(3, 20, 320)
    late = [d for d in delays if d > 1000]
    assert early <= 3 and len(late) <= 4, (early, delays)


def test_a_just_confirmed_echo_delay_asks_the_cold_evidence() -> None:
    """Through the tuned AEC3 (bench/echo.py --e2e --features, replayed by
    bench/barge_replay.py) an answer whose echo delay was confirmed 0.5 s into its sound (the
    estimate moved a block) leaked its echo voiced, within 10 dB of the echo expected, for
    the 260 ms after, and cut itself. For RESETTLE_MS after confirming COLD_NEED_MS are
    asked, and what leaked meanwhile is no evidence after; then a user's NEED_MS barge in."""
    from agentd.voice.barge_in import NEED_MS, RESETTLE_MS, BargeInPolicy

    echo = 10 ** (-29 / 10)
    leak = 10 ** (-33 / 10)  # the recorded frames: -32..-43 dBFS under -26..-35 expected

    def run(policy: BargeInPolicy) -> list[bool]:
        heard = iter(100.0 + 0.02 * i for i in range(400))
        for _ in range(60):  # into the answer's sound, past its onset: confirmed
            policy.frame(20, False, 1e-8, next(heard), True, echo)
        for _ in range(10):  # the stream's delay unconfirmed, then confirmed
            policy.frame(20, False, 1e-8, next(heard), False, echo)
        for _ in range(2):
            policy.frame(20, False, 1e-8, next(heard), True, echo)
        return [policy.frame(20, True, leak, next(heard), True, echo) for _ in range(13)]

    assert any(run(BargeInPolicy(resettle_ms=0)))  # the rule the run had: cut itself
    assert not any(run(BargeInPolicy()))
    assert RESETTLE_MS >= 2 * 20 + 13 * 20  # (the leak came within it)
    policy = BargeInPolicy()
    run(policy)
    quiet = [
        policy.frame(20, False, 1e-8, 200.0 + 0.02 * i, True, echo)
        for i in range(RESETTLE_MS // 20 - 15)  # (15 frames since confirming above)
    ]
    user = [policy.frame(20, True, leak, 201.0 + 0.02 * i, True, echo) for i in range(10)]
    assert not any(quiet) and user.index(True) == NEED_MS // 20 - 1


# A trial's answer through the rig (bench/echo.py --e2e 13 40 --shadow, answer 119 of 138), its
# judged frames until the talker: voiced (v) or not (u) and dBFS after the suppressor, the echo
# expected (dBFS; -: none), the delay settled (s) or not (n), the linear output (voiced, dBFS;
# -: none), the canceller's far-end sound since the speaker got busy (s). Its delay was
# confirmed 0.5 s into its sound; 0.45-0.75 s later its echo leaked through both the linear
# filter (4-7 dB under the echo expected) and the suppressor (-41..-49 dBFS).
LATE_LEAK = (
    "u-68 - s v-69 0.00, u-69 - s v-69 0.00, u-68 - s v-68 0.00, u-68 - s v-68 0.00,"
    "u-68 - s v-68 0.00, u-69 - n v-69 0.00, u-69 - n u-69 0.00, u-69 - n u-69 0.00,"
    "u-69 - n u-69 0.00, u-68 - n u-68 0.00, u-68 - n - 0.00, u-69 - n u-69 0.02,"
    "u-69 - n u-68 0.04, u-68 - n u-68 0.06, u-69 - n u-69 0.08, u-68 - n u-68 0.10,"
    "u-69 - n u-69 0.12, u-68 - n u-68 0.14, u-68 - n u-68 0.16, u-68 - n u-66 0.18,"
    "v-48 -40 n v-46 0.20, v-43 -40 n v-39 0.22, v-50 -39 n v-37 0.24, v-64 -28 n v-34 0.26,"
    "v-67 -24 n v-32 0.28, v-69 -24 n v-30 0.30, v-70 -24 n v-32 0.32, u-70 -27 n v-34 0.34,"
    "u-70 -25 n v-33 0.36, u-68 -22 n v-28 0.38, u-68 -19 n v-25 0.40, u-69 -19 n v-25 0.41,"
    "u-69 -19 n v-26 0.41, u-69 -22 n v-27 0.43, u-69 -23 n v-29 0.45, u-70 -23 n v-31 0.47,"
    "u-69 -26 n v-34 0.49, u-69 -28 s v-35 0.51, u-70 -27 s v-32 0.53, u-70 -27 s v-31 0.55,"
    "u-70 -27 s v-29 0.57, u-70 -28 s v-31 0.59, u-68 -30 s v-35 0.61, u-69 -33 s v-38 0.63,"
    "u-69 -25 s v-38 0.65, u-69 -25 s v-38 0.67, u-69 -25 s v-33 0.69, u-69 -26 s v-32 0.71,"
    "u-69 -29 s v-34 0.73, u-69 -25 s v-37 0.75, u-69 -24 s v-36 0.77, u-70 -24 s v-30 0.79,"
    "u-70 -24 s v-27 0.81, u-70 -25 s v-29 0.83, u-70 -25 s v-28 0.85, u-69 -24 s v-28 0.87,"
    "u-69 -23 s v-31 0.89, u-70 -23 s v-31 0.91, u-65 -23 s v-27 0.93, u-61 -25 s v-26 0.95,"
    "v-49 -28 s v-28 0.97, v-44 -31 s v-34 0.99, v-61 -34 s v-41 1.01, v-70 -37 s v-42 1.03,"
    "v-69 -34 s v-41 1.05, u-69 -33 s v-39 1.07, u-69 -30 s v-37 1.09, u-69 -23 s v-35 1.11,"
    "u-69 -22 s v-34 1.13, u-68 -22 s v-31 1.15, u-66 -22 s v-26 1.17, v-55 -24 s v-24 1.19,"
    "v-48 -27 s v-27 1.21, v-41 -27 s v-32 1.23, v-43 -27 s v-34 1.25,"
)


def test_an_echo_leaking_late_after_its_delay_is_confirmed_is_no_barge_in() -> None:
    """The rule with a RESETTLE_MS of 400 cuts the answer above 1.5 s in (replayed by
    bench/barge_replay.py: its one false fire in that run's 138 answers, and the same in a
    later run's 137); asked the cold evidence for RESETTLE_MS it is not cut, and no trial of
    either run decides later."""
    from agentd.voice.barge_in import BargeInPolicy

    def db_(tok: str) -> float:
        return 0.0 if tok == "-" else 10 ** (float(tok.lstrip("uv")) / 10)

    frames = []
    for row in LATE_LEAK.split(","):
        if not row.strip():
            continue
        out, echo, settled, lin, heard = row.split()
        linear = None if lin == "-" else (lin[0] == "v", db_(lin))
        frames.append((out[0] == "v", db_(out), settled == "s", db_(echo), linear, float(heard)))

    def fired(policy: BargeInPolicy) -> bool:
        return any(
            policy.frame(20, v, e, 500.0 + h, st, echo, lin) for v, e, st, echo, lin, h in frames
        )

    assert len(frames) == 75
    assert fired(BargeInPolicy(resettle_ms=400, trust_db=-math.inf))  # the rule the run had
    assert not fired(BargeInPolicy())
    # its linear filter removed only 4-10 dB of the echo expected meanwhile: the record
    # (TRUST_DB) alone keeps it whole too
    assert not fired(BargeInPolicy(resettle_ms=400))


# The first answer the rig played to a fresh daemon (bench/echo.py --e2e 13 40 --features, run
# H10: answer 26 of 137, frames 150-293), in LATE_LEAK's columns: the canceller had heard
# 2.6-5.1 s of far-end sound, its linear filter removed a median 5-10 dB of the echo expected
# (18-21 dB once converged), and the leak, voiced, 5-12 dB under the echo expected, cut the
# answer 3.2 s before its end with nobody talking.
UNCONVERGED = (
    "v-46 -40 s v-47 2.58,v-50 -43 s v-52 2.58,v-56 -46 s v-56 2.58,v-59 -49 s v-60 2.58,"
    "v-63 -52 s v-63 2.58,v-64 -55 s v-65 2.58,u-67 -58 s u-67 2.58,u-68 -61 s u-66 2.60,"
    "u-69 -64 s u-63 2.62,u-68 -67 s u-59 2.64,u-69 -70 s v-51 2.66,u-69 -73 s v-49 2.68,"
    "u-69 -76 s v-49 2.70,u-69 -79 s v-50 2.72,u-69 - s v-56 2.74,u-70 - s v-57 2.76,"
    "u-57 -44 s v-53 2.78,v-45 -38 s v-42 2.78,v-41 -30 s v-39 2.79,v-32 -23 s v-31 2.81,"
    "v-29 -20 s v-28 2.83,v-27 -20 s v-26 2.85,v-25 -20 s v-26 2.87,v-29 -22 s v-28 2.89,"
    "v-31 -25 s v-31 2.91,v-39 -28 s v-33 2.93,v-40 -31 s v-38 2.93,v-41 -33 s v-38 2.95,"
    "v-45 -36 s v-42 2.97,v-43 -38 s v-41 2.99,v-41 -38 s v-40 3.01,v-37 -29 n v-35 3.03,"
    "v-33 -27 n v-33 3.05,v-31 -24 n v-30 3.07,v-35 -24 n v-31 3.09,v-43 -24 n v-30 3.11,"
    "v-41 -26 n v-34 3.13,v-46 -29 n v-37 3.15,v-56 -32 n v-35 3.17,v-53 -32 n v-35 3.19,"
    "v-53 -30 n v-35 3.21,v-52 -27 n v-33 3.23,v-66 -27 n v-32 3.25,v-67 -27 n v-32 3.27,"
    "v-68 -27 n v-35 3.29,u-67 -29 n v-40 3.30,u-68 -32 n v-42 3.30,u-67 -30 n v-42 3.32,"
    "u-66 -26 n v-36 3.34,u-67 -25 n v-36 3.36,u-67 -23 n v-34 3.38,u-68 -23 n v-34 3.40,"
    "u-69 -23 n v-33 3.41,u-68 -23 n v-35 3.41,u-69 -24 n v-35 3.43,u-69 -27 n v-37 3.45,"
    "u-68 -30 n v-40 3.47,u-68 -33 n v-43 3.49,u-68 -36 n v-42 3.51,u-67 -37 n v-41 3.53,"
    "u-63 -37 n v-41 3.55,u-56 -37 n v-42 3.57,u-56 -39 s v-47 3.59,u-60 -41 s v-49 3.61,"
    "u-61 -40 s v-45 3.63,u-55 -38 s v-42 3.65,v-47 -36 s v-42 3.67,v-39 -27 s v-37 3.67,"
    "v-40 -24 s v-32 3.69,v-38 -21 s v-30 3.71,v-39 -21 s v-30 3.73,v-42 -21 s v-32 3.75,"
    "v-67 -22 s v-33 3.77,v-69 -24 s v-36 3.79,v-65 -27 s v-36 3.81,u-66 -30 s v-37 3.83,"
    "u-68 -31 s v-37 3.85,u-60 -34 s v-41 3.87,v-51 -37 s v-44 3.89,v-54 -40 s v-43 3.91,"
    "v-63 -29 s v-40 3.93,v-69 -25 s v-34 3.95,v-68 -25 s v-35 3.97,u-69 -25 s v-38 3.99,"
    "u-68 -28 s v-38 4.01,u-69 -31 s v-41 4.03,u-69 -26 s v-39 4.05,u-69 -25 s v-36 4.07,"
    "u-69 -25 s v-35 4.09,u-68 -25 s v-37 4.11,u-68 -28 s v-38 4.13,u-68 -31 s v-42 4.15,"
    "u-64 -26 s v-40 4.17,u-68 -26 s v-38 4.19,u-69 -24 s v-34 4.21,u-69 -23 s v-32 4.22,"
    "u-69 -23 s v-32 4.24,u-68 -23 s v-34 4.26,u-68 -25 s v-33 4.28,u-62 -28 s v-35 4.30,"
    "v-56 -31 s v-39 4.32,v-58 -34 s v-41 4.34,v-67 -37 s v-41 4.36,v-67 -38 s v-42 4.38,"
    "v-67 -41 s v-47 4.40,u-66 -32 s v-44 4.42,u-62 -32 s v-38 4.44,u-51 -24 s v-32 4.46,"
    "v-48 -23 s v-28 4.48,v-45 -23 s v-30 4.50,v-53 -23 s v-33 4.52,v-51 -26 s v-35 4.54,"
    "v-47 -29 s v-37 4.56,v-54 -32 s v-40 4.58,v-55 -29 s v-40 4.60,v-59 -27 s v-37 4.61,"
    "v-68 -27 s v-36 4.63,v-67 -27 s v-34 4.65,v-60 -25 s v-32 4.67,v-67 -25 s v-32 4.69,"
    "u-67 -25 s v-33 4.71,u-68 -26 s v-35 4.73,u-67 -28 s v-37 4.75,u-66 -31 s v-40 4.77,"
    "u-60 -34 s v-42 4.79,u-60 -37 s v-45 4.81,u-60 -38 s v-42 4.83,u-59 -36 s v-41 4.85,"
    "u-59 -30 s v-38 4.87,v-44 -28 s v-34 4.89,v-36 -28 s v-34 4.91,v-38 -28 s v-36 4.93,"
    "v-40 -30 s v-38 4.95,v-49 -33 s v-43 4.97,v-42 -31 s v-37 4.99,v-40 -26 s v-34 5.01,"
    "v-35 -24 s v-31 5.03,v-33 -24 s v-30 5.05,v-34 -24 s v-31 5.07,v-37 -24 s v-32 5.08,"
    "v-33 -25 s v-31 5.08,v-33 -27 s v-33 5.08,v-39 -29 s v-35 5.08,v-34 -30 s v-35 5.08,"
)


def _frames(rows: str) -> list[tuple[bool, float, bool, float, tuple[bool, float] | None, float]]:
    """LATE_LEAK's columns as the policy takes them: voiced, energy, settled, echo expected,
    linear output (voiced, energy), far-end sound heard (s)."""

    def energy(tok: str) -> float:
        return 0.0 if tok == "-" else 10 ** (float(tok.lstrip("uv")) / 10)

    frames = []
    for row in rows.split(","):
        if row.strip():
            out, echo, settled, lin, heard = row.split()
            linear = None if lin == "-" else (lin[0] == "v", energy(lin))
            frames.append(
                (out[0] == "v", energy(out), settled == "s", energy(echo), linear, float(heard))
            )
    return frames


def test_a_canceller_whose_linear_filter_has_not_shown_it_removes_the_echo_is_not_trusted() -> None:
    """The answer above: with the rule the run had it is cut at its last frame; with the
    linear filter's record (TRUST_DB) it is not, and the record alone decides: the same
    frames, their linear output 20 dB under the echo expected (a converged filter's), are
    cut as before."""
    from agentd.voice.barge_in import TRUST_DB, BargeInPolicy

    frames = _frames(UNCONVERGED)

    def cut_at(policy: BargeInPolicy, frames: list[Any]) -> int | None:
        for k, (v, e, st, echo, lin, h) in enumerate(frames):
            if policy.frame(20, v, e, h, st, echo, lin):
                return k
        return None

    assert len(frames) == 144
    cut = cut_at(BargeInPolicy(trust_db=-math.inf), frames)  # the rule the run had
    assert cut is not None and cut >= 142  # (the run: its last frame; here rounded to dB)
    policy = BargeInPolicy()
    assert cut_at(policy, frames) is None and not policy.trusted()
    converged = [
        (v, e, st, echo, lin and (lin[0], echo / 100), h) for v, e, st, echo, lin, h in frames
    ]
    assert cut_at(BargeInPolicy(), converged) is not None
    assert TRUST_DB < 20


def test_the_linear_filters_record_is_the_cancellers_and_not_the_users() -> None:
    """The record is kept across answers (it is the canceller's: the gate resets the policy
    when the speaker falls silent) and ends RECORD_LAG_MS before the frame judged: a user
    talking over the answer makes the linear output loud (5 dB under the echo expected at
    SER -5 dB), and those frames must not make the canceller look unconverged before the
    user has barged in. An unconverged record makes the same user wait until they are
    within UNTRUSTED_MARGIN_DB of the echo expected."""
    from agentd.voice.barge_in import NEED_MS, RECORD_LAG_MS, UNTRUSTED_MARGIN_DB, BargeInPolicy

    echo = 10 ** (-25 / 10)
    heard = iter(100.0 + 0.02 * i for i in range(10_000))

    def answer(policy: BargeInPolicy, removed_db: float) -> None:
        """2 s of an answer's echo-only frames, the linear filter removing ``removed_db``."""
        for _ in range(100):
            policy.frame(
                20, False, 1e-7, next(heard), True, echo, (True, echo / 10 ** (removed_db / 10))
            )
        policy.reset()  # (the speaker fell silent)

    def user(policy: BargeInPolicy, level_db: float, removed_db: float) -> int | None:
        """The user, voiced, ``level_db`` under the echo expected after the suppressor and
        5 dB under it in the linear output: the frame that barges in."""
        out, lin = echo / 10 ** (level_db / 10), echo / 10**0.5
        for _ in range(60):  # past the answer's onset, nobody talking
            removed = echo / 10 ** (removed_db / 10)
            policy.frame(20, False, 1e-7, next(heard), True, echo, (True, removed))
        for k in range(50):
            if policy.frame(20, True, out, next(heard), True, echo, (True, lin)):
                return k
        return None

    converged = BargeInPolicy()
    answer(converged, 20.0)
    assert user(converged, 10.0, 20.0) == NEED_MS // 20 - 1 < RECORD_LAG_MS // 20
    stuck = BargeInPolicy()
    answer(stuck, 8.0)
    assert not stuck.trusted()
    assert user(stuck, 10.0, 8.0) is None
    assert user(stuck, -UNTRUSTED_MARGIN_DB - 1, 8.0) is not None


def test_an_answers_onset_is_counted_in_its_sound_not_from_when_the_speaker_got_busy() -> None:
    """The echo of an answer's first sound reaches the microphone ~0.5 s after the speaker
    became busy (playout delay, output buffer, room); its onset residual is no user. Seen
    through the rig: 220 ms of voiced residual 500-720 ms after busy, then quiet: it must not
    complete a barge-in once 800 ms have passed since busy (it did, at 820 ms); counted
    from the answer's first sound the onset is past at 1.2 s, and a user's NEED_MS do."""
    from agentd.voice.barge_in import NEED_MS, ONSET_MS, BargeInPolicy

    loud, quiet = 10 ** (-36 / 10), 10 ** (-68 / 10)
    policy = BargeInPolicy()
    heard, fired = 50.0, []
    for k in range(60):  # 1.2 s of 20 ms frames from busy
        t = k * 20
        heard += 0.02 if t >= 300 else 0.0  # its far end sounds from 300 ms on
        leak = 500 <= t < 720
        fired.append(policy.frame(20, leak, loud if leak else quiet, heard))
    assert not any(fired)
    assert ONSET_MS < 1200 - 300  # past the onset now: a user's NEED_MS barge in
    user = [policy.frame(20, True, loud, heard + 0.02 * i) for i in range(6)]
    assert user.index(True) == NEED_MS // 20 - 1


def test_a_chunks_first_and_last_sound_are_found_as_a_search_finds_them() -> None:
    """FarEnd places an answer's onset and end by a chunk's first and last nonzero sample:
    the shortcut for a chunk that starts and ends with sound (_sounding) must agree with a
    search on every kind of chunk (silence, sound at either end, a lone sample)."""
    from agentd.audio.echo import _sounding

    rng = np.random.default_rng(4)
    chunks = [np.zeros(320, np.int16), np.ones(1, np.int16), np.zeros(1, np.int16)]
    for _ in range(200):
        x = rng.integers(-3, 4, int(rng.integers(1, 400))).astype(np.int16)
        x[: int(rng.integers(0, 3)) * int(rng.integers(0, x.size))] = 0  # leading silence, or not
        chunks.append(x)
    for x in chunks:
        nz = np.flatnonzero(x)
        assert _sounding(x) == ((int(nz[0]), int(nz[-1])) if nz.size else None)


def test_each_answer_proves_its_echo_delay_and_a_dropped_stream_restarts() -> None:
    """echo.mode aec keeps the speaker's stream running on silence, yet each answer (sound
    after ANSWER_GAP_S of silence) must show again that its echo is where the canceller
    expects it (the echo path may have moved meanwhile, unseen by the stream): unsettled at
    its first frame, confirmed within its first second (measured, not timed out). A drop (a
    device fault) restarts the stream, unconfirmed until measured, or until SETTLE_MAX_S
    after its first sound (not after its start)."""
    import numpy as np

    from agentd.audio.echo import SETTLE_MAX_S, EchoCanceller, EchoSetup
    from agentd.audio.frame import AudioFrame
    from tests import voice_eval

    speech = np.frombuffer(to_int16_(voice_eval._playback(np.random.default_rng(5), 2.0)), "<i2")
    sil = np.zeros(16000, np.int16)
    ec = EchoCanceller(EchoSetup(aec=True))
    far, t0, d = ec.far, 50.0, 320  # the echo 20 ms behind its reference (the target)

    def run(far_signal: np.ndarray, start: float, probes: dict[float, bool]) -> None:
        mic = np.concatenate([np.zeros(d, np.int16), far_signal // 2])[: far_signal.size]
        for k in range(far_signal.size // 320):
            far.written(far_signal[k * 320 : (k + 1) * 320], 16000, start + k * 0.02)
            ec.process(
                AudioFrame(
                    mic[k * 320 : (k + 1) * 320].tobytes(), 16000, timestamp=start + k * 0.02
                )
            )
            for at in probes:
                if abs(k * 0.02 - at) < 0.01:
                    probes[at] = ec.settled

    # one stream: 1 s silence, an answer, 2 s silence, another answer
    seen = {1.1: True, 2.9: False, 5.04: True, 6.2: False}
    run(np.concatenate([sil, speech, sil, sil, speech]), t0, seen)
    assert far.streams == 1 and far.epoch == 3  # the stream, then each answer
    assert ec.aligner is not None and ec.aligner.moves == 0, ec.aligner.measured
    # each answer: unsettled at its start, confirmed within its first 1.2 s
    assert seen == {1.1: False, 2.9: True, 5.04: False, 6.2: True}
    assert SETTLE_MAX_S > 1.2
    far.dropped(t0 + 7.0)  # a device fault: the stream restarts (its latency may differ)
    seen = {1.5: True, 2.04: True}
    n = ec.aligner.matched
    run(np.concatenate([sil, sil, speech]), t0 + 7.0, seen)
    assert far.streams == 2
    assert seen == {1.5: False, 2.04: False}  # 2 s of silence, then its first sound: unsure
    assert ec.settled and SETTLE_MAX_S > 2.0  # measured within the 2 s answer, not timed out
    assert ec.aligner.matched > n


def test_a_delay_beyond_the_aligners_reach_is_confirmed_by_the_cancellers_convergence() -> None:
    """The rig's echo comes ~0.3 s after its reference (beyond the aligner's search): the
    echo estimate's delay is handed to AEC3 (AEC3_CONFIG: its own estimator is off; not
    handed, the unrelated stream below "converged" at 0.48 s on the suppressor alone); once
    AEC3 removes it deeply the stream counts as settled, well before SETTLE_MAX_S. A stream
    whose sound the canceller does not remove (here the microphone hears something else than
    the reference, as when a restarted stream's echo has moved where AEC3 has not found it)
    confirms nothing: trusted only at SETTLE_MAX_S."""
    import numpy as np

    from agentd.audio.echo import SETTLE_MAX_S, EchoCanceller, EchoSetup
    from tests import voice_eval

    def speech(seed: int) -> np.ndarray:
        pcm = to_int16_(voice_eval._playback(np.random.default_rng(seed), 4.0))
        return np.frombuffer(pcm, "<i2")

    ec = EchoCanceller(EchoSetup(aec=True))  # one canceller, warm after the first stream
    t = 20.0
    settled_at = []
    for far, heard in ((speech(5), speech(5)), (speech(7), speech(11)), (speech(9), speech(9))):
        ec.far.dropped(t)  # each a new playback stream
        mic = np.concatenate([np.zeros(int(0.3 * 16000), np.int16), heard // 2])
        settled_at.append(float("inf"))
        for k in through(ec, far, mic, t):
            if ec.settled and settled_at[-1] == float("inf"):
                settled_at[-1] = k * 0.02
        t += far.size // 320 * 0.02
    assert ec.aligner is not None and ec.aligner.moves == 0
    assert ec.stream_delay_ms == (260 if ec.tuned else 0) and ec.delay_moves == ec.tuned
    first, unexplained, learned = settled_at
    # (tuned: the delay is handed once two of the echo estimate's searches agree, each
    # after ~1 s of far-end sound, here at 2.86 s, then 0.5 s of deep removal: measured
    # 3.4 s; the stock wheel 0.8. A later answer, the delay known, settles at once.)
    assert first < (3.8 if ec.tuned else 2.0) and learned < 2.0, settled_at
    assert unexplained >= SETTLE_MAX_S - 0.3, settled_at  # (its first 0.3 s are silent)


def test_a_frames_block_energies_are_computed_once_for_the_estimate_and_the_convergence() -> None:
    """The echo estimate (Aligner._envelope) and the convergence check (Aligner.cancelled)
    both need the frame's energies per 10 ms block of the far end and the raw microphone:
    block() computes them once and hands them on (the far end's, then the microphone's;
    None while the estimate idles, when no block has far-end sound to count)."""
    import numpy as np

    from agentd.audio.echo import BLOCK, CONVERGED_BLOCKS, Aligner, FarEnd

    rng = np.random.default_rng(3)
    al = Aligner(FarEnd())
    silent = np.zeros(2 * BLOCK, np.int16)
    assert al.block(silent, silent) is None  # idle: nothing computed
    far = (rng.standard_normal(2 * BLOCK) * 3000).astype(np.int16)
    near = (far // 4).astype(np.int16)
    got = al.block(near, far)
    sq = np.concatenate(
        [np.sum(v.astype(np.float64).reshape(-1, BLOCK) ** 2, 1) for v in (far, near)]
    )
    assert got is not None and np.allclose(got, sq, rtol=1e-6), (got, sq)
    # handed to the convergence check: the microphone's energy over the output's, per block
    al.far.epoch = 1
    quiet = (far // 400).astype(np.int16)  # 40 dB below the microphone
    for _ in range(CONVERGED_BLOCKS // 2 - 1):
        al.cancelled(quiet, got)
    assert al._confirmed == -1  # (a frame short of CONVERGED_BLOCKS)
    al.cancelled(quiet, None)  # a silent far end: no block counts
    assert al._confirmed == -1
    al.cancelled(near, got)  # nothing removed in these two blocks: under 15 dB over the 50
    for _ in range(CONVERGED_BLOCKS // 2 - 1):
        al.cancelled(quiet, got)
    assert al._confirmed == -1  # ... until they leave the window
    al.cancelled(quiet, got)
    assert al._confirmed == 1


def test_the_echo_expected_follows_the_far_end_at_the_echos_delay_and_gain() -> None:
    """The echo's delay behind the reference (here 0.3 s, beyond the aligner's reach) and its
    gain (-6 dB) are found from the envelopes; the estimate is the echo's level where the
    far end sounded 0.3 s before, and falls away in the far end's silences (where a user is
    heard)."""
    import numpy as np

    from agentd.audio.echo import BLOCK, EchoCanceller, EchoSetup
    from agentd.audio.pcm import to_float
    from tests import voice_eval

    play = np.frombuffer(to_int16_(voice_eval._playback(np.random.default_rng(5), 6.0)), "<i2")
    lag = int(0.3 * 16000)
    mic = (np.concatenate([np.zeros(lag, np.int16), play])[: play.size] // 2).astype(np.int16)
    ec = EchoCanceller(EchoSetup(aec=True))
    assert ec.echo_energy == 0.0  # nothing played: no echo expected
    got, want = [], []
    for k in through(ec, play, mic, 10.0):
        x = to_float(mic[k * 320 : (k + 1) * 320]).astype(np.float64)
        got.append(ec.echo_energy)
        want.append(float(np.mean(x * x)))
    assert ec.aligner is not None and ec.aligner.echo_delay is not None
    assert abs(ec.aligner.echo_delay * BLOCK / 16000 - 0.3) <= 0.01, ec.aligner.echo_delay
    assert abs(ec.aligner.echo_gain_db + 6.0) <= 1.5, ec.aligner.echo_gain_db
    late = slice(len(got) // 2, None)  # (once found)
    g, w = np.array(got[late]), np.array(want[late])
    loud = w > 10 ** (-40 / 10)
    assert np.all(g[loud] >= w[loud] * 10 ** (-6 / 10))  # the echo there is expected
    quiet = w < 10 ** (-75 / 10)  # the far end's pauses, 0.3 s on: the estimate falls away
    assert quiet.any() and np.median(g[quiet]) < np.median(w[loud]) * 10 ** (-20 / 10)
    # a match at a gain no echo path has (the microphone hears the far end 46 dB down: a
    # match of something else) moves nothing
    found = ec.aligner.echo_delay, ec.aligner.echo_gain_db
    for _ in through(ec, play, (mic // 100).astype(np.int16), 20.0):
        pass
    assert ec.aligner.echo_r >= 0.6  # (it matched)
    assert ec.aligner.echo_delay == found[0] and abs(ec.aligner.echo_gain_db - found[1]) < 1


def test_the_rooms_noise_while_idle_is_no_echo_at_no_delay() -> None:
    """While nothing plays the far end's envelope is its floor; the microphone's was floored
    too (nothing measured), so both stepped up together at an answer's first sound: the
    room's noise (here -41 dBFS) matched the far end at no delay better than the echo at its
    own, and the first search of an answer after a pause found 0 blocks (through the rig 7
    times in 593 searches, then handed to AEC3: the answer's echo leaked and a barge-in
    trial was missed). The microphone's level is kept while idle: every search finds the
    echo's 0.3 s."""
    import numpy as np

    from agentd.audio.echo import EchoCanceller, EchoSetup
    from tests import voice_eval

    rate = 16000
    rng = np.random.default_rng(5)
    ec = EchoCanceller(EchoSetup(aec=True))
    al = ec.aligner
    assert al is not None
    t = 10.0
    found = []
    for seed in range(3):  # answers after 4 s of the room alone
        play = np.frombuffer(
            to_int16_(voice_eval._playback(np.random.default_rng(seed), 4.0)), "<i2"
        )
        echo = np.concatenate([np.zeros(int(0.3 * rate), np.int16), play])[: play.size] // 2
        far = np.concatenate([np.zeros(4 * rate, np.int16), play])
        mic = np.concatenate([np.zeros(4 * rate, np.int16), echo]) + rng.normal(0, 300, far.size)
        mic16 = mic.clip(np.iinfo(np.int16).min, np.iinfo(np.int16).max).astype(np.int16)
        searched = al.echo_found
        for _ in through(ec, far, mic16, t):
            if al.echo_found != searched:
                searched = al.echo_found
                found.append((al.echo_delay, round(al.echo_r, 2)))
        t += far.size // 320 * 0.02
    assert len(found) >= 5 and all(d == 30 and r >= 0.8 for d, r in found), found


def test_the_echo_estimate_is_not_searched_on_a_few_blocks_of_far_end_sound() -> None:
    """ECHO_EVERY counts the far end's sound since the last search, which may lie scattered
    over answers' tails: the count may fall due in an answer's first blocks, with nearly
    nothing of it in the history. A user who starts talking as the answer starts then
    matches the far end at no delay (through the rig 7 searches on windows of 4-12 blocks
    of sound moved the estimate to 0 for a second, and one handed AEC3 0 ms for 180). A
    match whose window, or the held delay's, has less than ECHO_MIN_SOUND is not used."""
    import numpy as np

    from agentd.audio.echo import ECHO_EVERY, EchoCanceller, EchoSetup
    from tests import corpus, voice_eval

    rate = 16000
    rng = np.random.default_rng(5)
    play = np.frombuffer(to_int16_(voice_eval._playback(rng, 6.0)), "<i2")
    lag = int(0.3 * rate)

    def echo(x: np.ndarray) -> np.ndarray:  # 0.3 s late, -6 dB
        return np.concatenate([np.zeros(lag, np.int16), x])[: x.size] // 2

    ec = EchoCanceller(EchoSetup(aec=True))
    al = ec.aligner
    assert al is not None
    t = 10.0

    def run(far: np.ndarray, mic: np.ndarray) -> None:
        nonlocal t
        for _ in through(ec, far, mic, t):
            pass
        t += far.size // 320 * 0.02

    run(play, echo(play))
    found = al.echo_delay, al.echo_gain_db
    assert found[0] == 30, found
    al._env_sound = ECHO_EVERY - 6  # (the last answer's tail counted: a search due soon)
    quiet = np.zeros(int(2.6 * rate), np.int16)  # a pause longer than the history
    run(quiet, rng.normal(0, 30, quiet.size).astype(np.int16))
    answer = play[:rate]
    user = np.frombuffer(to_int16_(corpus.utterance(corpus.PHRASES[3]) * 0.7), "<i2")[:rate]
    run(answer, (user.astype(np.int32) + echo(answer)).astype(np.int16))
    assert (al.echo_delay, al.echo_gain_db) == found  # (before: 0 blocks, r 0.77)


def test_a_cancelled_frame_far_below_the_echo_expected_is_no_user() -> None:
    """AEC3 lets a burst of the echo through (an answer's onset, a phrase after a pause):
    voiced, above the floor, but well below the echo that caused it; a user talking into
    the echo's pauses is above what is expected there."""
    from agentd.voice.barge_in import MARGIN_DB, NEED_MS, BargeInPolicy

    def level(dbfs: float) -> float:
        return float(10 ** (dbfs / 10))

    def run(energy: float, echo: float) -> list[bool]:
        policy = BargeInPolicy()  # a warm canceller, 1.2 s into an answer's sound
        for i in range(60):
            policy.frame(20, False, level(-70), 100.0 + 0.02 * i, True, echo)
        return [policy.frame(20, True, energy, 102.0 + 0.02 * i, True, echo) for i in range(50)]

    assert not any(run(level(-25 + MARGIN_DB - 3), level(-25)))
    assert run(level(-25 + MARGIN_DB + 3), level(-25)).index(True) == NEED_MS // 20 - 1
    assert run(level(-40), level(-60)).index(True) == NEED_MS // 20 - 1


def test_a_user_the_suppressor_took_down_counts_by_the_linear_filters_output() -> None:
    """Double talk over loud echo: AEC3's suppressor leaves the user's frames unvoiced and
    quiet; before it, AEC3's linear filter has them voiced, near the echo expected. They
    count, as LINEAR_WEIGHT of a frame, where the suppressor let something through, and
    whole once the linear filter's record shows it converged (CONVERGED_DB), but not while
    the cold evidence is asked (the canceller in flux: through the rig, a re-confirmed
    answer's leak cut it by those frames); a leak of the linear filter that the suppressor
    took to its floor, or one far below the echo, does not."""
    from agentd.voice.barge_in import (
        ARM_S,
        COLD_NEED_MS,
        CONVERGED_DB,
        LINEAR_MARGIN_DB,
        LINEAR_WEIGHT,
        MARGIN_DB,
        NEED_MS,
        PASSED_DB,
        TRUST_DB,
        WARM_S,
        WINDOW_MS,
        BargeInPolicy,
    )

    def level(dbfs: float) -> float:
        return float(10 ** (dbfs / 10))

    def run(
        out_db: float,
        linear: tuple[bool, float] | None,
        voiced: bool = False,
        removed_db: float = 20.0,
        heard_s: float = 100.0,
    ) -> list[bool]:
        policy = BargeInPolicy()  # a canceller that has heard ``heard_s``, 1.2 s into an answer
        echo = level(-25)
        # nobody talking: its linear filter removes ``removed_db`` of the echo (its record)
        for i in range(60):
            removed = (True, level(-25 - removed_db))
            policy.frame(20, False, level(-70), heard_s + 0.02 * i, True, echo, removed)
        return [
            policy.frame(20, voiced, level(out_db), heard_s + 2 + 0.02 * i, True, echo, linear)
            for i in range(50)
        ]

    near = level(-25 + LINEAR_MARGIN_DB + 3)
    assert 0 < LINEAR_WEIGHT < 1
    assert TRUST_DB < CONVERGED_DB < 18  # (converged through the rig: 18-21 dB)
    # a filter trusted but not shown converged: its frames weigh LINEAR_WEIGHT; converged, 1
    trusted = run(PASSED_DB + 2, (True, near), removed_db=(TRUST_DB + CONVERGED_DB) / 2)
    assert trusted.index(True) == round(NEED_MS / LINEAR_WEIGHT) // 20 - 1
    assert run(PASSED_DB + 2, (True, near)).index(True) == NEED_MS // 20 - 1
    # ... but while the cold evidence is asked (here: before WARM_S), LINEAR_WEIGHT still:
    # such frames alone never make it in a window (whole, they would)
    assert WINDOW_MS * LINEAR_WEIGHT < COLD_NEED_MS <= WINDOW_MS
    assert not any(run(PASSED_DB + 2, (True, near), heard_s=(ARM_S + WARM_S) / 2))
    # frames the suppressed output counts (voiced, near the echo) weigh whole, whatever the
    # linear output says
    whole = run(-25 + MARGIN_DB + 3, (True, near), voiced=True)
    assert whole == run(-25 + MARGIN_DB + 3, None, voiced=True)
    assert whole.index(True) == NEED_MS // 20 - 1
    assert not any(run(PASSED_DB + 2, None))  # (what the stock wheel gives: none)
    assert not any(run(PASSED_DB + 2, (False, near)))  # not voiced
    assert not any(run(PASSED_DB + 2, (True, level(-25 + LINEAR_MARGIN_DB - 3))))
    assert not any(run(PASSED_DB - 3, (True, near)))  # the suppressor took it to its floor


def test_the_gate_hands_the_policy_the_linear_output_with_its_own_vad() -> None:
    """The linear output is its own stream: the gate runs a VAD of its own on it (webrtcvad
    keeps state between frames) and hands the policy its verdict and energy; without it
    (an empty Speaker.echo_linear) the policy is told none."""
    import numpy as np

    from agentd.audio.frame import AudioFrame
    from agentd.audio.pcm import to_float
    from agentd.voice.barge_in import BargeInPolicy
    from agentd.voice.gate import BargeIn, Speaker, VoiceGate, VoiceSettings

    s = VoiceSettings("hands_free", echo_mode="aec", barge_in="voice")
    quiet = AudioFrame(np.full(320, 40, np.int16).tobytes(), 16000)  # -58 dBFS: let through
    loud = np.full(320, 1800, np.int16).tobytes()
    # only the linear frame is "voiced"; its linear output as loud as the echo expected all
    # along would be an unconverged canceller's record (TRUST_DB, tested on its own)
    policy = BargeInPolicy(trust_db=-math.inf)
    gate = VoiceGate(s, is_speech=lambda f: f == loud, barge_in=policy)
    assert gate.is_speech is gate.linear_is_speech
    seen: list[object] = []
    judge = gate.barge_in.frame
    gate.barge_in.frame = lambda *a: seen.append(a[6]) or judge(*a)  # type: ignore[method-assign]
    events = []
    for i in range(60):  # past the answer's onset
        f = AudioFrame(quiet.audio, 16000, timestamp=0.02 * i)
        heard = 100.0 + 0.02 * i
        speaker = Speaker(True, echo_heard_s=heard, echo_energy=10**-2.5, echo_linear=loud)
        events += gate.process(f, speaker)
    assert seen[0] == (True, pytest.approx(float(np.mean(to_float(loud) ** 2))))
    assert [e for e in events if isinstance(e, BargeIn)]
    seen.clear()
    gate.process(AudioFrame(quiet.audio, 16000, timestamp=1.0), Speaker(True))
    assert seen == [None]
    own = VoiceGate(s)  # webrtcvad: one instance per stream
    assert own.is_speech is not own.linear_is_speech


def test_a_band_the_answer_lacks_is_over_the_echo_expected() -> None:
    """The echo expected per band (Aligner.over_echo_db): what AEC3 lets through of an echo,
    even nearly whole, stays under the echo expected in every band; a user far under the
    echo as a whole, in a band the answer lacks (here: an answer with nothing above 3.4 kHz,
    a whistle at 6 kHz), is over it there."""
    import numpy as np

    from agentd.audio.echo import BAND_KEEP, BLOCK, EchoCanceller, EchoSetup
    from tests import voice_eval

    rate = 16000
    rng = np.random.default_rng(7)
    speech = voice_eval._playback(rng, 7.0)
    spectrum = np.fft.rfft(speech)
    spectrum[np.fft.rfftfreq(speech.size, 1 / rate) > 3400] = 0  # a narrowband voice
    play = np.frombuffer(to_int16_(np.fft.irfft(spectrum, speech.size)), "<i2")
    lag = int(0.3 * rate)
    echo = (np.concatenate([np.zeros(lag, np.int16), play])[: play.size] // 2).astype(np.int16)
    ec = EchoCanceller(EchoSetup(aec=True))
    al = ec.aligner
    assert al is not None
    assert al.over_echo_db(echo[:320]) == -np.inf  # nothing played yet: nothing expected
    t = np.arange(320) / rate
    overs: dict[str, list[float]] = {"leak": [], "residual": [], "user": []}
    for k in through(ec, play, echo, 10.0):
        e = echo[k * 320 : (k + 1) * 320].astype(np.float64)
        if k < 6 * 50 or not al.echo_energy or float(np.mean(e**2)) < 300**2:
            continue  # (the estimate found, and the echo sounding in the frame)
        assert al.echo_delay == 30 and al._far_held <= (BAND_KEEP + 2) * BLOCK
        # a whistle at 6 kHz, 20 dB under the echo as a whole: under the broadband margin
        user = np.sqrt(2 * np.mean(e**2) * 10**-2) * np.sin(2 * np.pi * 6000 * t + k)
        for name, out in (("leak", e * 0.7), ("residual", e * 0.03), ("user", e * 0.03 + user)):
            overs[name].append(al.over_echo_db(out.astype(np.int16)))
    assert len(overs["user"]) > 10
    assert max(overs["leak"]) < -2  # a leak 3 dB under the echo: under it in every band
    assert max(overs["residual"]) < -15
    # (10 ms blocks, no window: the answer's loud lows leak into every band, so not every
    # frame; the whistle alone, 20 dB under the echo, is under the broadband margin)
    assert np.mean(np.array(overs["user"]) > 0) >= 0.75
    assert np.median(overs["user"]) > 3


def test_a_band_silent_in_the_answer_and_its_leak_is_not_over_the_echo_expected() -> None:
    """Bands the answer leaves silent sit at the floor in the far end and in the output
    alike: the echo's gain (here -6 dB) must not read as the output being over the echo
    there (before, a 500 Hz answer's leak 3 dB under its echo read +6 dB "over")."""
    import numpy as np

    from agentd.audio.echo import EchoCanceller, EchoSetup

    rate = 16000
    rng = np.random.default_rng(2)
    # a 500 Hz tone keyed on and off by 10 ms blocks (whole cycles: no other band sounds)
    tone = np.round(8000 * np.sin(2 * np.pi * 500 * np.arange(160) / rate)).astype(np.int16)
    play = np.concatenate([tone * (rng.random() < 0.5) for _ in range(700)]).astype(np.int16)
    lag = int(0.3 * rate)
    echo = (np.concatenate([np.zeros(lag, np.int16), play])[: play.size] // 2).astype(np.int16)
    ec = EchoCanceller(EchoSetup(aec=True))
    al = ec.aligner
    assert al is not None
    overs = []
    for k in through(ec, play, echo, 10.0):
        e = echo[k * 320 : (k + 1) * 320].astype(np.float64)
        if k >= 6 * 50 and al.echo_energy and float(np.mean(e**2)) >= 300**2:
            overs.append(al.over_echo_db((e * 0.7).astype(np.int16)))
    assert al.echo_delay == 30 and len(overs) > 10
    assert max(overs) <= 0


def test_a_user_under_the_echo_as_a_whole_counts_by_a_band_over_it() -> None:
    """A voiced frame above the floor, under the broadband margin, counts whole where its
    loudest band is BAND_MARGIN_DB over the echo expected there; asked only of frames the
    other rules do not count (the bands cost a transform)."""
    from agentd.voice.barge_in import BAND_MARGIN_DB, MARGIN_DB, NEED_MS, BargeInPolicy

    def level(dbfs: float) -> float:
        return float(10 ** (dbfs / 10))

    asked = 0

    def run(out_db: float, over_db: float) -> list[bool]:
        def over() -> float:
            nonlocal asked
            asked += 1
            return over_db

        policy = BargeInPolicy()  # a warm canceller, 1.2 s into an answer's sound
        echo = level(-25)
        for i in range(60):
            policy.frame(20, False, level(-70), 100.0 + 0.02 * i, True, echo, None, over)
        return [
            policy.frame(20, True, level(out_db), 102.0 + 0.02 * i, True, echo, None, over)
            for i in range(50)
        ]

    under = -25 + MARGIN_DB - 8
    assert run(under, BAND_MARGIN_DB + 1).index(True) == NEED_MS // 20 - 1
    assert not any(run(under, BAND_MARGIN_DB - 1))
    assert not any(run(-56, BAND_MARGIN_DB + 20))  # under the floor
    asked = 0
    run(-25 + MARGIN_DB + 3, BAND_MARGIN_DB - 1)  # counted by the broadband rule
    assert asked == 0  # (nor while unvoiced, the 60 frames before)


def test_the_gate_asks_the_bands_of_the_frame_it_judges() -> None:
    """Speaker.echo_over is handed the very samples the policy judges, and only when asked."""
    import numpy as np

    from agentd.audio.frame import AudioFrame
    from agentd.voice.gate import BargeIn, Speaker, VoiceGate, VoiceSettings

    s = VoiceSettings("hands_free", echo_mode="aec", barge_in="voice")
    frame = np.full(320, 80, np.int16)  # -52 dBFS: over the floor, far under the echo
    gate = VoiceGate(s, is_speech=lambda f: True)
    given: list[np.ndarray] = []

    def over(x: np.ndarray) -> float:
        given.append(x)
        return 3.0

    events = []
    for i in range(60):  # past the answer's onset
        speaker = Speaker(True, echo_heard_s=100 + 0.02 * i, echo_energy=1e-3, echo_over=over)
        events += gate.process(AudioFrame(frame.tobytes(), 16000, timestamp=0.02 * i), speaker)
    assert [e for e in events if isinstance(e, BargeIn)]
    assert given and all(np.array_equal(x, frame) for x in given)


@pytest.mark.slow
async def test_interruptions_with_aec_keep_the_stream_truncate_what_was_heard_and_answer_whole(
    room: rigs.PulseRoom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """echo.mode aec: an interruption stops the writer and lets what ALSA holds play out
    instead of restarting the sound server's stream (whose new latency made the canceller
    leak echo for seconds). Three in a row: the speaker's stream is never restarted, each
    truncate is where the room went quiet (±20 ms, by content), the speaker falls silent
    within the output buffer, and the next answer plays whole."""
    import asyncio

    from agentd.audio.pcm import to_float
    from agentd.sim.server import DEFAULT_REPLY
    from tests.room_oracle import (
        cut_error_ms,
        loud_end_ms,
        loud_runs_ms,
        played_span_ms,
        room_probe,
    )

    over: dict[str, Any] = {"echo__mode": "aec", "sounds__enabled": False}
    async with running_daemon(tmp_path, monkeypatch, over) as h:
        sim, d = h.sim, h.daemon
        heard: list[bytes] = []
        probe = room_probe(asyncio.get_running_loop(), lambda f: heard.append(f.audio))
        probe.start()
        await h.until(lambda: len(heard) > 100)  # its first second arrives late
        pb = d.playback
        assert pb is not None and pb.continuous
        buffer_ms = d.cfg.audio.output.buffer_ms
        sim.reply = DEFAULT_REPLY
        long = to_float(sim.speech.pcm(DEFAULT_REPLY, 16000))
        lo_run, hi_run = max(loud_runs_ms(long, after_ms=1000), key=lambda r: r[1] - r[0])
        streams = None
        for _ in range(3):
            await d._control("ask", text="tell me a story")
            await h.until(lambda: h.state() == "speaking" and d.conv.item_id is not None)
            item = d.conv.item_id
            assert item is not None
            mark = len(heard)
            streams = d.far_end.streams if streams is None else streams
            # the writer is buffer_ms ahead of the speaker: cut so the room goes quiet mid-run
            await h.until(lambda i=item: pb.heard_ms(i) >= (lo_run + hi_run) / 2 - buffer_ms)
            n_trunc = len(sim.client_events("conversation.item.truncate"))
            await d._control("interrupt")
            await h.until(
                lambda n=n_trunc: len(sim.client_events("conversation.item.truncate")) > n
            )
            await h.until(lambda: not pb.busy() and h.state() == "idle")
            await asyncio.sleep(0.5)  # the room's monitor delivers late
            trunc = sim.client_events("conversation.item.truncate")[-1]
            lo, hi = played_span_ms(to_float(b"".join(heard[mark - 50 :])), long)
            assert lo_run - 100 < lo <= hi < hi_run + 100 and hi - lo <= 20, (lo, hi)
            error_ms = cut_error_ms(lo, hi, trunc["audio_end_ms"])
            tail_ms = (pb.silent_at - pb.flushed_at) * 1000
            print(f"cut {lo:.0f}-{hi:.0f} ms, truncate {trunc['audio_end_ms']}, tail {tail_ms:.0f}")
            assert abs(error_ms) <= 20, (trunc["audio_end_ms"], lo, hi)
            assert 0 <= tail_ms <= buffer_ms + 10, tail_ms
            assert d.far_end.streams == streams  # the stream was never restarted
        # the next answer plays whole
        mark = len(heard)
        await d._control("ask", text="tell me a story")
        await h.until(lambda: h.state() == "speaking" and d.conv.item_id is not None)
        item = d.conv.item_id
        assert item is not None
        await h.until(lambda: h.state() == "idle" and not pb.busy(), timeout=40)
        await asyncio.sleep(0.5)
        probe.stop()
        lo, hi = played_span_ms(to_float(b"".join(heard[mark - 50 :])), long)
        assert lo == loud_end_ms(long) and hi == float("inf"), (lo, hi)
        assert abs(pb.heard_ms(item) - len(long) / 16) <= 20
        assert d.far_end.streams == streams


def test_barge_replay_reads_a_runs_frames_as_the_e2e_labels_them(tmp_path: Path) -> None:
    """bench/barge_replay.py: recorded frames split into answers by the gaps between them,
    an echo-only answer's cut counted as a false fire but not the next question the harness
    asks after it (its frames after the answer's last sound), a trial's decision in ms from
    the talker's onset, SERs in the e2e's order (-5 dB trials, then -10 dB)."""
    import numpy as np

    from bench import barge_replay

    rows: list[tuple[float, ...]] = []
    when, heard = 0.0, 20.0

    def frame(talker: float, onset: float, voiced: bool, dbfs: float, sound: bool) -> None:
        nonlocal when, heard
        when += 0.02
        heard += 0.02 if sound else 0.0
        rows.append((talker, onset, 20, voiced, dbfs, -30.0, heard, 1, 0, when, 10, -8))

    def answer(burst: range = range(0), tail: bool = False) -> None:
        nonlocal when
        for k in range(100):
            frame(0, -np.inf, k in burst, -20.0 if k in burst else -70.0, True)
        for k in range(40 if tail else 0):  # the next question 0.3 s after the answer's end
            frame(0, -np.inf, k >= 15, -20.0 if k >= 15 else -70.0, False)
        when += 2.0

    def trial(dbfs: float) -> None:
        nonlocal when
        for _ in range(100):
            frame(0, -np.inf, False, -70.0, True)
        for k in range(30):
            frame(1, 0.02 * k, True, dbfs, True)
        when += 2.0

    answer(burst=range(60, 66))
    answer(tail=True)
    trial(-20.0)
    trial(-60.0)  # below the floor: never a barge-in
    np.save(tmp_path / "f.npy", np.array(rows, dtype=np.float64))
    f = barge_replay.replay(barge_replay.answers(tmp_path / "f.npy"), barge_replay.RAN)
    assert f.false_fires == 1 and f.judged == 4, f
    assert f.p95_ms[-5.0] == f.median_ms[-5.0] and abs(f.p95_ms[-5.0] - 60) < 1e-6, f
    assert f.missed == {-5.0: 0, -10.0: 1} and f.beyond == {-5.0: 0, -10.0: 0}, f


def test_the_aligner_keeps_only_its_latest_delays_however_long_it_runs() -> None:
    """A daemon plays answers for months: each window's delay the aligner finds is kept for
    diagnostics, the newest MEASURED_KEPT of them, and only counted beyond that (kept whole,
    the list grew by every clear window of every answer)."""
    import numpy as np

    from agentd.audio.echo import ALIGN_S, BLOCK, MEASURED_KEPT, VAD_RATE, Aligner, FarEnd

    rng = np.random.default_rng(5)
    al = Aligner(FarEnd())
    windows = 2 * MEASURED_KEPT + 10
    n = int(windows * ALIGN_S * VAD_RATE) + VAD_RATE  # (the first window waits for its lags)
    far = (rng.standard_normal(n) * 3000).astype(np.int16)
    delay = 320  # the echo 20 ms behind (TARGET_S): each clear window confirms, none moves
    near = np.concatenate((np.zeros(delay, np.int16), far[:-delay] // 2))
    step = 2 * BLOCK
    for i in range(0, n - step + 1, step):
        al.block(near[i : i + step], far[i : i + step])
    assert al.matched >= windows, al.matched
    assert len(al.measured) == MEASURED_KEPT
    assert al.moves == 0 and all(abs(lag - 0.02) < 0.002 for lag in al.measured), al.measured


def _far_end_over_hours(
    ppm: float,
    hours: float,
    dry_at: float | None = None,
    lost_at: float | None = None,
    speaker_ppm: float | None = None,
) -> tuple[list[int], Any]:
    """FarEnd driven as the daemon drives it for ``hours``, the microphone's card ``ppm`` off
    the system's clock and the speaker's ``speaker_ppm`` (default: the same card, a HAT's;
    two cards: the far end is resampled by their drift, as the daemon's estimate would have
    it): playback tapped 60 ms ahead with its jittering ``at``, capture timestamps jittering
    too. The far end counts its samples (each sample says where it is in the stream), so
    each frame shows which far-end sample the timeline placed at it against the one that
    played as it was captured. ``dry_at``: the speaker runs dry for 100 ms there (minutes);
    ``lost_at``: 200 ms of microphone frames are lost there. Returns the placement's error
    per frame (samples)."""
    import numpy as np

    from agentd.audio.echo import VAD_RATE, FarEnd

    rate, n, buf, wrap = VAD_RATE, 1600, 0.06, 30000  # 100 ms frames and writes (the test's speed)
    rng = np.random.default_rng(6)
    mono = 1 / (1 + ppm * 1e-6)  # system seconds per microphone card second
    mono_spk = mono if speaker_ppm is None else 1 / (1 + speaker_ppm * 1e-6)
    far = FarEnd(clock=lambda: 0.0)
    if speaker_ppm is not None:  # (the far end's 16 kHz samples per speaker's, less one)
        far.compensate, far._want = True, (mono_spk / mono - 1) * 1e6
    j = 0  # far samples written
    dry = 0.0  # the speaker's card time lost to running dry so far
    errors: list[int] = []
    card_t = 0.0
    while card_t < hours * 3600:
        if lost_at is not None and abs(card_t - lost_at * 60) < 0.05:
            card_t += 0.2  # frames lost: the next one is captured 200 ms on
        ran_dry = dry_at is not None and abs(card_t - dry_at * 60) < 0.05
        if ran_dry:
            dry += 0.1
        spk_t = card_t * mono / mono_spk  # the speaker card's time as the frame is captured
        while j < (spk_t - dry + buf + n / rate) * rate:  # the writer keeps 60 ms ahead
            at = (j / rate + dry) * mono_spk + rng.uniform(-0.002, 0.002)
            far.written((np.arange(j, j + n) % wrap + 1).astype(np.int16), rate, at)
            j += n
        y = far.take(n, card_t * mono + rng.uniform(0, 0.01))
        playing = round((spk_t - dry) * rate) % wrap
        # (the frame the speaker fell silent in: nothing plays; a frame at the ramp's wrap:
        # resampled, the step rings)
        if y[0] and not ran_dry and 400 < playing < wrap - 400:
            errors.append((int(y[0]) - 1 - playing + wrap // 2) % wrap - wrap // 2)
        card_t += n / rate
    return errors, far


@pytest.mark.parametrize("ppm", [-80.0, 80.0])
def test_the_timeline_holds_for_hours_when_the_cards_clock_is_off_the_systems(ppm: float) -> None:
    """A stream that runs on (echo.mode aec writes silence between answers, for weeks) with
    the cards' clock ``ppm`` off the system's: the far end stays where it plays on the
    microphone's clock. Measured against the system's clock instead, the microphone
    re-anchored once 150 ms had crept in (every ~30 min at 80 ppm), or the playback restarted
    its stream once 60 ms had (every ~12 min), and the reference stepped that far under AEC3
    each time. A real gap (the speaker ran dry) and lost microphone frames still re-anchor,
    and the far end lands where it plays after them too."""
    from agentd.audio.echo import VAD_RATE

    errors, far = _far_end_over_hours(ppm, 1.0)
    assert far.streams == 1 and far._anchors == 1, (far.streams, far._anchors)
    assert max(errors) - min(errors) <= 0.01 * VAD_RATE, (min(errors), max(errors))
    errors, far = _far_end_over_hours(ppm, 0.6, dry_at=20.0, lost_at=30.0)
    assert far.streams == 2 and far._anchors == 2, (far.streams, far._anchors)
    assert max(errors) - min(errors) <= 0.01 * VAD_RATE, (min(errors), max(errors))


def test_the_timeline_holds_for_hours_on_two_cards_with_their_own_clocks() -> None:
    """A USB microphone and a USB speaker: each card's clock off the system's by its own
    amount, and off each other's (100 ppm). The far end, resampled by that drift (as the
    drift estimate has it once made), stays where it plays on the microphone's clock for an
    hour: the stream is never restarted nor the microphone re-anchored, though the speaker's
    writes creep off the system's clock and the microphone's timestamps off both."""
    from agentd.audio.echo import VAD_RATE

    # (on 41eeb4c, before the timeline was the microphone's: 2 anchors, the far end placed
    # up to 150 ms off what played)
    errors, far = _far_end_over_hours(-80.0, 1.0, speaker_ppm=20.0)
    assert far.streams == 1 and far._anchors == 1, (far.streams, far._anchors)
    assert len(errors) > 30000, len(errors)
    assert max(errors) - min(errors) <= 0.01 * VAD_RATE, (min(errors), max(errors))


@pytest.mark.slow
async def test_the_daemons_far_end_holds_its_timeline_on_a_card_off_the_system_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real daemon, echo.mode aec, on one card (driftmic/driftspk: a HAT's codec) whose
    clock runs DRIFT_PPM off the system's, for longer than the old timeline took to step:
    the speaker's stream, written on in silence, is never restarted and the microphone's
    clock never re-anchored: the microphone's clock followed the card's offset from the
    system's, and the playback, on the same card, kept to the microphone's clock. Before,
    the playback restarted its stream once 60 ms had crept in (40 s at -1500 ppm), and the
    reference stepped that far under AEC3 (FarEnd over hours, above)."""
    import asyncio
    import time

    rigs.clock_pcms()
    over: dict[str, Any] = {
        "echo__mode": "aec",
        "sounds__enabled": False,
        "audio__input": {"device": "driftmic", "rate": 48000, "channels": 2},
        "audio__output": {"device": "driftspk", "rate": 48000, "buffer_ms": 60},
    }
    async with running_daemon(tmp_path, monkeypatch, over) as h:
        far = h.daemon.far_end
        assert far is not None and h.daemon.playback is not None
        assert h.daemon.playback.continuous
        streams, anchors = far.streams, far._anchors
        await asyncio.sleep(10.0)  # (the microphone's offset averaged first)
        t0, mic0, creep0 = time.monotonic(), far._mic_err, far._creep
        await asyncio.sleep(35.0)
        took = time.monotonic() - t0
        assert far.streams == streams and far._anchors == anchors, (far.streams, far._anchors)
        # meanwhile the card's clock fell this far further behind the system's (ms) ...
        behind_ms = -rigs.DRIFT_PPM * 1e-3 * took
        mic_ms, creep_ms = (far._mic_err - mic0) * 1e3, (far._creep - creep0) * 1e3
        print(
            f"{took:.0f} s: the card {behind_ms:.1f} ms further behind the system's clock; the "
            f"microphone's offset followed {mic_ms:.1f} ms, the playback's off it {creep_ms:.1f}"
        )
        # ... which the microphone's offset followed (its follower lags a ramp: averaged over
        # all it has seen, then over 20 s), and the playback, on that clock, kept to it: all
        # it crept off the microphone's clock is what that follower lagged
        assert 0.6 * behind_ms < mic_ms < behind_ms + 10, (mic_ms, behind_ms)
        assert abs(creep_ms - (behind_ms - mic_ms)) < 5, (creep_ms, behind_ms - mic_ms)


async def test_the_daemon_holds_a_microphone_frame_until_its_far_end_is_written(
    tmp_path: Path,
) -> None:
    """The hub's side of FarEnd.owed_s: a frame whose far end is late waits (the frames after
    it queue behind it, in order) and goes on once Playback writes it, or after HOLD_MAX_S
    however it stands; a writer that stopped holds nothing up."""
    import asyncio
    import time

    from agentd.audio.echo import HOLD_MAX_S
    from agentd.audio.frame import AudioFrame
    from agentd.config import load
    from agentd.service import Daemon, Hooks
    from agentd.sim.server import Simulator
    from tests.harness import write_config

    async with Simulator("openai", pace=0) as sim:
        cfg = write_config(tmp_path / "c.yaml", sim, tmp_path, **echo_scenes.config(rig=False))
    d = Daemon(cfg, load(cfg), Hooks(use_gpio=False))
    assert d.echo is not None
    d.loop = asyncio.get_running_loop()
    seen: list[tuple[float, np.ndarray]] = []
    d._mic_frame = lambda f: seen.append((time.monotonic(), d.far_end.take(f.samples, f.timestamp)))  # type: ignore[method-assign]
    sig = (np.random.default_rng(4).standard_normal(16000) * 3000).astype(np.int16)
    t0 = time.monotonic()
    d.far_end.written(sig[:1600], 16000, t0)  # 100 ms of far end, leaving from t0

    def frame(k: int) -> AudioFrame:
        return AudioFrame(bytes(640), 16000, timestamp=t0 + k * 0.02)

    for k in range(5):  # their far end is all there: straight through
        d._on_mic(frame(k))
    assert len(seen) == 5 and not d._held
    d._on_mic(frame(5))  # [t0+0.1, t0+0.12): not written yet
    d._on_mic(frame(6))  # ... and the one after queues behind it
    assert len(seen) == 5 and len(d._held) == 2
    await asyncio.sleep(0.012)
    assert len(seen) == 5  # still waiting
    d.far_end.written(sig[1600:3200], 16000, t0 + 0.1)  # the writer catches up
    for _ in range(100):
        if len(seen) == 7:
            break
        await asyncio.sleep(0.005)
    assert len(seen) == 7 and not d._held
    assert np.array_equal(seen[5][1], sig[1600:1920])  # no hole
    assert np.array_equal(seen[6][1], sig[1920:2240])
    for k in range(7, 10):  # up to t0+0.2: written
        d._on_mic(frame(k))
    assert len(seen) == 10 and not d._held
    held_from = time.monotonic()
    for k in range(10, 13):  # the writer falls silent: the frames wait HOLD_MAX_S at most...
        d._on_mic(frame(k))
    assert len(seen) == 10 and len(d._held) == 3
    while d._held and time.monotonic() - held_from < 1:
        await asyncio.sleep(0.005)
    assert len(seen) == 13 and not d._held
    assert HOLD_MAX_S <= seen[10][0] - held_from < HOLD_MAX_S + 0.1
    assert not seen[10][1].any()  # (a hole: nothing was written for it)
    for k in range(13, 16):  # ... and once it is that far behind, none waits
        d._on_mic(frame(k))
    assert len(seen) == 16 and not d._held


async def test_noise_suppression_alone_never_holds_a_microphone_frame(tmp_path: Path) -> None:
    """Only AEC3 needs the far end: with half-duplex and noise suppression the canceller
    takes it only to keep pace, and a frame whose far end is late goes straight on."""
    import asyncio
    import time

    from agentd.audio.frame import AudioFrame
    from agentd.config import load
    from agentd.service import Daemon, Hooks
    from agentd.sim.server import Simulator
    from tests.harness import write_config

    mic = {"device": "mic", "rate": 48000, "channels": 2, "noise_suppression": 2}
    async with Simulator("openai", pace=0) as sim:
        cfg = write_config(
            tmp_path / "c.yaml", sim, tmp_path, echo__mode="half_duplex", audio__input=mic
        )
    d = Daemon(cfg, load(cfg), Hooks(use_gpio=False))
    assert d.echo is not None and not d.echo.setup.aec
    d.loop = asyncio.get_running_loop()
    seen: list[AudioFrame] = []
    d._mic_frame = seen.append  # type: ignore[method-assign]
    t0 = time.monotonic()
    d.far_end.written(np.ones(1600, np.int16), 16000, t0)
    for k in range(7):  # frames 5 and 6 run past what was written
        d._on_mic(AudioFrame(bytes(640), 16000, timestamp=t0 + k * 0.02))
        d.far_end.take(320, t0 + k * 0.02)  # (what the canceller's process() would take)
    assert len(seen) == 7 and not d._held
