"""The clock drift between speaker and microphone (issue 22): agentd/audio/drift.py's online
estimator on the echo path rig's scenes, FarEnd resampling the far end by it, and the whole
canceller path finding it and keeping the user better in double talk."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soxr

from agentd.audio import echo
from agentd.audio.drift import RECHECK_S, DriftEstimator
from agentd.audio.pcm import to_int16
from tests import corpus, echo_scenes, rigs, voice_eval
from tests.conftest import running_daemon
from tests.corpus import RATE

FRAME = RATE // 50  # the daemon's 20 ms frames


def _pcm(x: np.ndarray) -> np.ndarray:
    return np.frombuffer(to_int16(x), "<i2")


def _feed(
    d: DriftEstimator,
    far: np.ndarray,
    mic: np.ndarray,
    key: Callable[[int], Hashable] = lambda i: 0,
    applied: float = 0.0,
) -> list[tuple[float, float | None]]:
    """(far-end sound so far, estimate) after each 20 ms frame."""
    f16, m16 = _pcm(far), _pcm(mic)
    out = []
    for i in range(0, min(f16.size, m16.size) - FRAME + 1, FRAME):
        e = d.feed(f16[i : i + FRAME], m16[i : i + FRAME], key(i), applied)
        out.append((d.sound_s, e))
    return out


def _within_after(
    trace: list[tuple[float, float | None]], drift: float, sound_s: float = 6.0
) -> None:
    """From ``sound_s`` of far-end sound on, every estimate is within 10 ppm."""
    late = [e for s, e in trace if s >= sound_s]
    assert late, f"never {sound_s} s of far-end sound: {trace[-1]}"
    bad = [e for e in late if e is None or abs(e - drift) > 10]
    assert not bad, f"{len(bad)} estimates off {drift} ppm after {sound_s} s: {bad[:5]}"


@pytest.mark.parametrize("drift", [100.0, -100.0, 37.0])
def test_estimate_on_continuous_speech(drift: float) -> None:
    play = voice_eval._playback(np.random.default_rng(5), 12)
    mic = voice_eval.echo_at_mic(play, seed=2, drift_ppm=drift)
    d = DriftEstimator()
    trace = _feed(d, play, mic)
    _within_after(trace, drift)
    assert d.sure and abs(d.estimate - drift) <= 3  # type: ignore[operator]
    assert not d.running  # stopped once sure: no more windows computed
    n = d.windows
    _feed(d, play, mic)
    assert d.windows == n


def _answers(
    rng: np.random.Generator, lengths: list[float], gap_s: float
) -> tuple[np.ndarray, list[int]]:
    """Answers of ``lengths`` seconds with ``gap_s`` of silence before each; their starts."""
    parts, starts, n = [], [], 0
    for s in lengths:
        parts.append(np.zeros(int(gap_s * RATE), np.float32))
        n += parts[-1].size
        starts.append(n)
        parts.append(voice_eval._playback(rng, s))
        n += parts[-1].size
    return np.concatenate([*parts, np.zeros(RATE, np.float32)]), starts


@pytest.mark.parametrize("drift", [100.0, -37.0])
def test_estimate_on_answers_with_gaps(drift: float) -> None:
    """Answers of 1-9 s, the far end silent most of the time (4 s gaps), on one timeline
    (echo.mode aec: one continuous playback stream)."""
    play, _ = _answers(np.random.default_rng(3), [2.5, 1.5, 3.0, 1.0, 9.0], 4.0)
    mic = voice_eval.echo_at_mic(play, seed=1, drift_ppm=drift)
    _within_after(_feed(DriftEstimator(), play, mic), drift)


def test_estimate_on_answers_each_re_anchoring_the_timeline() -> None:
    """Each answer a new stream (its own intercept): the slope comes from within answers
    only, so it takes longer: within 10 ppm from 15 s of far-end sound on (6 s continuous)."""
    play, starts = _answers(np.random.default_rng(3), [2.5, 1.5, 3.0, 1.0, 9.0, 3.0], 4.0)
    mic = voice_eval.echo_at_mic(play, seed=1, drift_ppm=100.0)
    d = DriftEstimator()
    trace = _feed(d, play, mic, key=lambda i: sum(i >= s - RATE for s in starts))
    assert d._seg >= len(starts)  # (the segments were started)
    _within_after(trace, 100.0, 15.0)


def _stepped(far: np.ndarray, at: int, by: int) -> np.ndarray:
    """The far end as handed over with the reference moved ``by`` samples from ``at`` on."""
    return np.concatenate(
        (
            far[:at],
            far[at + by :] if by > 0 else np.concatenate((np.zeros(-by, far.dtype), far[at:])),
        )
    )


@pytest.mark.parametrize(
    ("by", "announced", "at_s", "within_s"),
    [
        (320, True, 5.0, 6.0),
        (-160, True, 5.0, 6.0),
        (6, False, 5.0, 6.0),
        (320, False, 5.0, 6.0),
        # early, so the estimate needs the windows after it (they are lost if the step is
        # not followed: 6 samples beyond JUMP, 320 beyond SEARCH)
        (6, False, 2.5, 7.5),
        (320, False, 2.5, 7.5),
        (-480, False, 2.5, 7.5),
    ],
)
def test_estimate_across_a_step_in_the_timeline(
    by: int, announced: bool, at_s: float, within_s: float
) -> None:
    """The Aligner moves the reference (a new segment key), or the path steps unannounced
    (the rig dropping 20 ms of backlog: found as a shift JUMP off, or a peak STEP_PEAK higher
    beyond SEARCH, confirmed by the next window)."""
    play = voice_eval._playback(np.random.default_rng(7), 14)
    mic = voice_eval.echo_at_mic(play, seed=3, drift_ppm=100.0)
    at = int(at_s * RATE)
    far = _stepped(play, at, by)[: mic.size]
    d = DriftEstimator()
    trace = _feed(d, far, mic, key=(lambda i: i >= at) if announced else (lambda i: 0))
    _within_after(trace, 100.0, within_s)
    assert abs(d.estimate - 100.0) <= 3  # type: ignore[operator]


def test_estimate_through_double_talk() -> None:
    """A near-end talker over the echo (SER 0 dB, a phrase every 3 s): the same estimate."""
    play = voice_eval._playback(np.random.default_rng(5), 14)
    mic = voice_eval.echo_at_mic(play, seed=2, drift_ppm=100.0)
    level = float(np.sqrt(np.mean(mic[np.abs(mic) > 1e-3] ** 2)))
    user = np.zeros_like(mic)
    for k, at in enumerate(range(RATE, mic.size - 2 * RATE, 3 * RATE)):
        u = corpus.utterance(corpus.PHRASES[k % len(corpus.PHRASES)])[: 2 * RATE]
        user[at : at + u.size] = u * level / float(np.sqrt(np.mean(u[np.abs(u) > 1e-3] ** 2)))
    _within_after(_feed(DriftEstimator(), play, mic + user), 100.0)


def test_estimate_is_the_residual_plus_what_is_applied() -> None:
    """Fed a far end already resampled by 90 ppm, it measures the 10 left and says 100."""
    play = voice_eval._playback(np.random.default_rng(5), 12)
    mic = voice_eval.echo_at_mic(play, seed=2, drift_ppm=100.0)
    far = soxr.resample(play, RATE, RATE * (1 + 90e-6), "VHQ")[: mic.size]
    d = DriftEstimator()
    _within_after(_feed(d, far, mic, applied=90.0), 100.0)
    assert abs(d.estimate - 100.0) <= 3  # type: ignore[operator]


def test_estimator_rechecks_after_a_while() -> None:
    play = voice_eval._playback(np.random.default_rng(5), 12)
    mic = voice_eval.echo_at_mic(play, seed=2, drift_ppm=100.0)
    d = DriftEstimator()
    _feed(d, play, mic)
    assert d.sure and not d.running
    quiet = np.zeros(RATE, np.int16)
    for _ in range(int(RECHECK_S) - 1):
        d.feed(quiet, quiet)
    assert not d.running
    d.feed(quiet, quiet)
    assert d.running and not d.sure and d.estimate is not None  # the last one stands meanwhile


def _tap(far: echo.FarEnd, x: np.ndarray, rate: int) -> None:
    """Playback's writer: ``x`` (int16 at the card ``rate``) in 20 ms writes, paced."""
    n = rate // 50
    for i in range(0, x.size, n):
        far.written(x[i : i + n], rate, i / rate)


@pytest.mark.parametrize("rate", [48000, 16000])
@pytest.mark.parametrize("ppm", [100.0, -100.0, 37.0])
def test_far_end_hands_out_the_ratio(rate: int, ppm: float) -> None:
    """Compensating by ``ppm``: 16000·(1 + ppm·1e-6) samples per played second, counted
    over 10 s with a silent gap (the resampler runs on through it) and a silent end."""
    x = (np.random.default_rng(1).standard_normal(rate * 10) * 3000).astype(np.int16)
    x[3 * rate : 4 * rate] = 0
    x[-rate // 2 :] = 0
    far = echo.FarEnd(clock=lambda: 0.0)
    far.compensate, far._want = True, ppm
    _tap(far, x, rate)
    assert far.ppm == ppm
    pos = far._position(rate)
    assert abs(pos - 10 * RATE * (1 + ppm * 1e-6)) <= 1
    # out so far: all of it less what the resampler holds back (the silence after pushes it)
    assert 0 <= pos - far.written_samples <= 0.06 * RATE


def test_far_end_keeps_its_phase_through_the_silence_between_phrases() -> None:
    """Compensating, the phrases of an answer come out as one unbroken resampling of it:
    restarted at each pause (to skip the silence), the sound after it was placed to ±0.5
    sample only, which AEC3's linear filter, fitted to the phrase before, had to re-learn
    (white noise: a phrase as little as 2 dB under its own level off the unbroken one)."""
    rate, ppm = 48000, 100.0
    rng = np.random.default_rng(5)
    parts: list[np.ndarray] = []
    for _ in range(16):  # phrases of noise, pauses longer than SKIP_SILENT_S between
        parts.append(
            (rng.standard_normal(int(rng.uniform(0.3, 1.0) * rate)) * 3000).astype(np.int16)
        )
        parts.append(np.zeros(int(rng.uniform(0.15, 0.5) * rate), np.int16))
    x = np.concatenate(parts)
    far = echo.FarEnd(clock=lambda: 0.0)
    far.compensate, far._want = True, ppm
    got, k, n = [], 0, rate // 50
    for i in range(0, x.size, n):
        far.written(x[i : i + n], rate, i / rate)
        while (k + 10) * FRAME < (i + n) * RATE // rate:  # taken 200 ms behind the writer
            got.append(far.take(FRAME, k * FRAME / RATE))
            k += 1
    out = np.concatenate(got).astype(np.float64)
    whole = soxr.resample(x.astype(np.float64), rate, RATE * (1 + ppm * 1e-6), quality="VHQ")
    start = 0
    for j, part in enumerate(parts):
        a = round(start * RATE * (1 + ppm * 1e-6) / rate) + 40
        b = a + part.size * RATE // rate - 80
        start += part.size
        if j % 2 or b > out.size:
            continue
        ref = whole[a:b]
        off = 10 * np.log10(np.sum((out[a:b] - ref) ** 2) / np.sum(ref**2))
        assert off < -30, (j // 2, off)


def test_far_end_changes_its_ratio_only_at_a_silent_gap() -> None:
    """A new estimate mid-answer waits for the next silent gap: the sound is not cut or
    moved under the canceller."""
    rate = 48000
    x = (np.random.default_rng(1).standard_normal(rate * 4) * 3000).astype(np.int16)
    x[2 * rate : 2 * rate + rate // 2] = 0
    far = echo.FarEnd(clock=lambda: 0.0)
    far.compensate = True
    _tap(far, x[:rate], rate)
    far._want = 100.0
    _tap_at = rate
    n = rate // 50
    for i in range(_tap_at, x.size, n):
        far.written(x[i : i + n], rate, i / rate)
        assert far.ppm == (100.0 if i >= 2 * rate + rate // 2 else 0.0), i / rate


def test_far_end_without_compensate_leaves_the_far_end_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stock config (AEC3's own delay estimator did worse with a compensated far end):
    not resampled, nothing estimated."""
    monkeypatch.setattr(echo, "configurable", lambda lib: False)  # the stock wheel's way
    play = voice_eval._playback(np.random.default_rng(5), 8)
    mic = voice_eval.echo_at_mic(play, seed=2, drift_ppm=100.0)
    ec = echo.EchoCanceller(echo.EchoSetup(aec=True))
    voice_eval.cancel(mic, play, 20, ec)
    assert ec.far.ppm == 0.0 and ec.far.drift.windows == 0
    assert ec.far.written_samples == play.size


def test_far_end_builds_the_segment_key_only_while_the_estimator_runs() -> None:
    """FarEnd.heard runs on every microphone frame: while the estimator sleeps (sure, until
    RECHECK_S) it ignores the timeline's segment key, so none is built and the FarEnd lock
    is not taken; the drift applied is still counted, and once it wakes the key is built
    again (its first frame a new segment)."""

    class Counted:  # the FarEnd lock, counting who takes it
        def __init__(self) -> None:
            self.lock, self.taken = threading.Lock(), 0

        def __enter__(self) -> None:
            self.taken += 1
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    far = echo.FarEnd(clock=lambda: 0.0)
    far.compensate, far.ppm = True, 50.0
    lock = Counted()
    far._lock = lock  # type: ignore[assignment]
    d = far.drift
    d.running, d.sure, d.estimate = False, True, 50.0  # asleep: sure of 50 ppm
    zeros = np.zeros(FRAME, np.int16)
    for _ in range(10):
        far.heard(zeros, zeros)
    assert lock.taken == 0 and d._key is None
    assert d._applied == 50.0 * 10 * FRAME and d._since == 10 * FRAME  # the ppm applied
    d._since = int(RECHECK_S * RATE) - FRAME  # the recheck is due with the next frame
    far.heard(zeros, zeros)
    assert d.running and lock.taken == 0  # woken (that frame still ignores the key)
    seg = d._seg
    far.heard(zeros, zeros)
    assert lock.taken == 1 and d._key == (far.streams, far.offset, far._anchors, 50.0)
    assert d._seg == seg + 1 and d._applied == 50.0 * 12 * FRAME


def _tuned() -> Any:
    """AEC3 with the tuned config (bench/aec3_config.py's ext_long40_supp_f), handed the way
    that runner hands it; needs the patched pywebrtc-audio (docs/aec3-config.md)."""
    from bench.aec3_config import CONFIGS

    lib = echo.library()
    if not echo.configurable(lib):
        pytest.skip("needs the patched pywebrtc-audio build (docs/aec3-config.md)")
    cfg = CONFIGS["ext_long40_supp_f"]
    return SimpleNamespace(
        EchoCanceller=lambda rate, ch: lib.EchoCanceller(rate, ch, 0, config=cfg),
        NoiseSuppressor=lib.NoiseSuppressor,
        GainController=lib.GainController,
    )


def test_canceller_path_finds_the_drift_and_keeps_the_user() -> None:
    """The whole canceller path (bench/echo.py's double talk: 8 s to converge, then a phrase
    every 4 s at SER -10 and 0 dB, the rig's 100 ppm): with the far end compensating, FarEnd
    finds the drift from what the canceller is handed, and the user comes through better."""
    from bench import echo as bench

    lib = _tuned()
    plain = bench.double_talk_figures(lib=lib)
    far = echo.FarEnd()
    far.compensate = True
    comp = bench.double_talk_figures(lib=lib, far=far)
    # (the ratio applied on five seeds of such speech: 99-106 ppm; 96-105 while the far end
    # was restarted at each pause)
    assert far.drift.sure and abs(far.ppm - 100.0) <= 7, (far.ppm, far.drift.estimate)
    assert comp["correlation_ser_0"] >= plain["correlation_ser_0"] + 0.04, (plain, comp)
    assert comp["correlation_ser_0"] >= 0.8


def test_the_daemons_canceller_compensates_only_with_the_tuned_build() -> None:
    """echo.make (the daemon's): compensating where AEC3 runs agentd's tuned config (the
    build that takes it), never with noise suppression alone."""
    far = echo.FarEnd()
    assert echo.make(echo.EchoSetup(aec=True), far) is not None
    assert far.compensate == echo.configurable(echo.library())
    _tuned()  # (the rest needs the patched build)
    assert far.compensate
    plain = echo.FarEnd()
    assert echo.make(echo.EchoSetup(noise_suppression=2), plain) is not None
    assert not plain.compensate


@pytest.mark.slow
async def test_the_daemon_finds_the_rigs_drift_from_its_own_path(
    room: rigs.PulseRoom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real daemon (aec, hands-free) through the echo path rig (PulseAudio, the rig's
    100 ppm between playback and capture): after three echo-only answers its far end has
    estimated the drift from the frames its own canceller was handed, and compensates by it."""
    from agentd.sim.echo_path import DRIFT_PPM, EchoRig

    _tuned()
    rig = EchoRig(room.socket, room.env).start()
    try:
        async with running_daemon(tmp_path, monkeypatch, echo_scenes.config(rig=True)) as h:
            far = h.daemon.far_end
            assert far.compensate
            talk = echo_scenes.Talker(room, rig, tmp_path)
            got = await echo_scenes.echo_only_answers(h, talk, 3, 1.0)
            est, sound, applied = far.drift.estimate, far.drift.sound_s, far.ppm
    finally:
        rig.stop()
    print(got, est, sound, applied)
    assert est is not None and abs(est - DRIFT_PPM) <= 10, (est, sound)
    assert abs(applied - DRIFT_PPM) <= 10, applied


def test_no_estimate_from_a_microphone_that_hears_something_else() -> None:
    """Far-end sound but no echo of it at the microphone (noise, or another talker) for
    2.5 min: no estimate at all (a plausible number from nothing would skew the far end)."""
    play = voice_eval._playback(np.random.default_rng(5), 150)
    rng = np.random.default_rng(2)
    for other in (
        rng.standard_normal(play.size).astype(np.float32) * 0.1,
        # (the corpus cycles through its phrases: another talker's voice, another pace)
        soxr.resample(voice_eval._playback(np.random.default_rng(9), 170), RATE, 0.88 * RATE),
    ):
        trace = _feed(DriftEstimator(), play, other[: play.size])
        assert all(e is None for _, e in trace), trace[-1]


def test_estimator_never_sure_stays_bounded() -> None:
    """The echo, but a timeline re-anchored every 3 s (three windows a segment: never a
    line to be sure of): the shifts kept are capped, so it stays as cheap as at the start."""
    from agentd.audio.drift import MAX_POINTS

    play = voice_eval._playback(np.random.default_rng(5), 14)
    mic = voice_eval.echo_at_mic(play, seed=2, drift_ppm=100.0)
    d = DriftEstimator()
    for k in range(14):
        _feed(d, play, mic, key=lambda i, k=k: (k, i // (3 * RATE)))
    assert not d.sure and d.running
    assert len(d._pts) == MAX_POINTS
