"""Scores of the voice gate on the generated corpus (used by tests and bench/voice_quality.py,
bench/echo.py): the barge-in scores run the echo path rig and the canceller on the component
level (the end-to-end figures come from the real daemon in tests/test_echo.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from agentd.audio.echo import EchoCanceller, EchoSetup
from agentd.audio.frame import AudioFrame
from agentd.audio.pcm import to_int16
from agentd.sim.echo_path import EchoPath
from agentd.voice.barge_in import WARM_S
from agentd.voice.gate import (
    Audio,
    BargeIn,
    Speaker,
    SpeechEnded,
    VoiceGate,
    VoiceSettings,
)
from tests import corpus
from tests.corpus import RATE


@dataclass
class GateScores:
    onsets: int
    onsets_caught: int
    sent_bytes: int
    total_bytes: int
    latencies_ms: list[float]
    premature: int
    utterances: int

    @property
    def onset_recall(self) -> float:
        return self.onsets_caught / max(1, self.onsets)

    @property
    def uplink_ratio(self) -> float:
        return self.sent_bytes / max(1, self.total_bytes)

    @property
    def premature_rate(self) -> float:
        return self.premature / max(1, self.utterances)


def score_gate(
    rec: corpus.Recording, settings: VoiceSettings, ms: int = 20, gate: VoiceGate | None = None
) -> GateScores:
    """Fed as ``ms`` frames (to ``gate``, by default a webrtcvad gate of ``settings``)."""
    gate = gate or VoiceGate(settings)
    sent: list[tuple[int, int]] = []
    ends: list[float] = []
    frames = corpus.frames(rec.audio, ms)
    for f in frames:
        for e in gate.process(f):
            if isinstance(e, Audio):
                start = round(e.frame.timestamp * RATE)
                sent.append((start, start + e.frame.samples))
            elif isinstance(e, SpeechEnded):
                ends.append(e.t)
    caught = sum(any(a <= s < b for a, b in sent) for s, _ in rec.spans)
    lat, premature = [], 0
    for s, e in rec.spans:
        inside = [t for t in ends if s / RATE < t < e / RATE]
        premature += bool(inside)
        after = [t for t in ends if t >= e / RATE]
        if after:
            lat.append((after[0] - e / RATE) * 1000)
    return GateScores(
        len(rec.spans),
        caught,
        sum(b - a for a, b in sent) * 2,
        sum(len(f.audio) for f in frames),
        lat,
        premature,
        len(rec.spans),
    )


def _playback(rng: np.random.Generator, seconds: float) -> np.ndarray:
    parts, n = [], 0
    i = int(rng.integers(len(corpus.PHRASES)))
    while n < seconds * RATE:
        u = corpus.utterance(corpus.PHRASES[i % len(corpus.PHRASES)]) * 0.7
        parts += [u, np.zeros(RATE // 5, np.float32)]
        n += u.size + RATE // 5
        i += 1
    return np.concatenate(parts)[: int(seconds * RATE)]


AHEAD_MS = 60  # the playback writer's lead over the speaker (audio.output.buffer_ms)


def echo_at_mic(play: np.ndarray, seed: int = 1, drift_ppm: float = 100.0) -> np.ndarray:
    """``play`` (float32, 16 kHz) as the microphone hears it through the echo path rig's
    loudspeaker, room, drift and noise (agentd/sim/echo_path.py), trimmed to its length."""
    y = EchoPath(drift_ppm=drift_ppm, seed=seed).process(play)
    return np.pad(y, (0, max(0, play.size - y.size)))[: play.size]


def cancel(mic: np.ndarray, play: np.ndarray, ms: int = 20, canceller: EchoCanceller | None = None
           ) -> list[AudioFrame]:  # fmt: skip
    """The daemon's microphone path on the component level: ``play`` is handed to the far
    end as the writer hands it to ALSA (AHEAD_MS before it plays), ``mic`` is cancelled in
    ``ms`` frames. Returns the cancelled frames."""
    return list(cancelling(mic, play, ms, canceller or EchoCanceller(EchoSetup(aec=True))))


def cancelling(
    mic: np.ndarray, play: np.ndarray, ms: int, ec: EchoCanceller
) -> Iterator[AudioFrame]:
    """:func:`cancel` one frame at a time: the canceller's state (``heard_s``) is that
    frame's, as the daemon's gate sees it."""
    ahead = RATE * AHEAD_MS // 1000
    play16 = np.frombuffer(to_int16(play), "<i2")
    ec.far.dropped(0.0)  # a previous run's tail (its times restart at 0): not this run's
    ec.far.written(play16[:ahead], RATE, 0.0)  # ``play``'s sample i leaves at i / RATE
    for f in corpus.frames(mic, ms):
        i = round(f.timestamp * RATE) + ahead
        ec.far.written(play16[i : i + f.samples], RATE, i / RATE)
        yield ec.process(f)


def barge_run(
    mic: np.ndarray,
    playback: np.ndarray,
    settings: VoiceSettings,
    ms: int = 20,
    canceller: EchoCanceller | None = None,
) -> list[float]:
    """Feed ``mic`` through the canceller as ``ms`` frames while ``playback`` plays (speaker
    busy); return barge-in times."""
    gate = VoiceGate(settings)
    ec = canceller or EchoCanceller(EchoSetup(aec=True))
    out = []
    for f in cancelling(mic, playback, ms, ec):
        busy = f.end < playback.size / RATE
        linear = ec.linear() if busy else None
        speaker = Speaker(
            busy=busy,
            echo_heard_s=ec.heard_s,
            echo_settled=ec.settled,
            echo_energy=ec.echo_energy,
            echo_linear=b"" if linear is None else linear.tobytes(),
            echo_over=ec.over_echo_db if busy else None,
            echo_slipped=ec.slipped,
            echo_refitting=ec.refitting,
        )
        for e in gate.process(f, speaker):
            if isinstance(e, BargeIn):
                out.append(e.t)
    return out


@dataclass
class BargeScores:
    echo_runs: int
    false_barge_ins: int
    double_talk: int
    detected_in_time: int
    delays_ms: dict[float, list[float]]  # per signal-to-echo ratio (dB); a miss is inf

    @property
    def detection_rate(self) -> float:
        return self.detected_in_time / max(1, self.double_talk)


BARGE_TARGET_MS = {-5.0: 500.0, -10.0: 1000.0}  # issue 22: p95 at these SERs


def _user(k: int, echo: np.ndarray, ser_db: float) -> np.ndarray:
    """The ``k``-th trial's phrase, at ``ser_db`` to ``echo`` (both measured where they
    sound)."""
    user = corpus.utterance(corpus.PHRASES[(k * 5 + 3) % len(corpus.PHRASES)])
    echo_rms = float(np.sqrt(np.mean(echo[np.abs(echo) > 1e-3] ** 2)))
    user_rms = float(np.sqrt(np.mean(user[np.abs(user) > 1e-3] ** 2)))
    return user * (echo_rms / user_rms * 10 ** (ser_db / 20))


def score_barge_in(
    seed: int, cases: int, sers_db: tuple[float, ...] = (-5.0, -10.0), ms: int = 20
) -> BargeScores:
    """Echo-only answers (no barge-in allowed) and the same answers with a user talking over
    them at each signal-to-echo ratio (in turn), all through the echo path and one canceller
    (made once, as the daemon makes it). Echo-only answers come first until the canceller
    has heard WARM_S of them: a younger one asks more evidence (the rule's choice; the
    e2e bench warms it the same way)."""
    rng = np.random.default_rng(seed)
    ec = EchoCanceller(EchoSetup(aec=True))
    s = VoiceSettings("hands_free", echo_mode="aec", barge_in="voice")
    false = runs = 0
    detected = 0
    delays: dict[float, list[float]] = {ser: [] for ser in sers_db}
    while ec.heard_s < WARM_S:
        play = _playback(rng, 5.0)
        false += len(barge_run(echo_at_mic(play, seed=seed), play, s, ms, ec))
        runs += 1
    for c in range(cases):
        play = _playback(rng, 5.0)
        echo = echo_at_mic(play, seed=seed)  # one room per run, as a device has
        false += len(barge_run(echo, play, s, ms, ec))
        runs += 1
        ser = sers_db[c % len(sers_db)]
        user = _user(c, echo, ser)
        onset = int(rng.uniform(1.5, 3.0) * RATE)
        dt = echo.copy()
        end = min(dt.size, onset + user.size)
        dt[onset:end] += user[: end - onset]
        hits = [t for t in barge_run(dt, play, s, ms, ec) if t >= onset / RATE - 0.02]
        delay = (hits[0] - onset / RATE) * 1000 if hits else float("inf")
        delays[ser].append(delay)
        detected += delay <= BARGE_TARGET_MS.get(ser, 1000.0)
    return BargeScores(runs, false, cases, detected, delays)


def moved(x: np.ndarray, by: int) -> np.ndarray:
    """``x`` with everything in it ``by`` samples later (earlier where negative), as long as
    it was: the head repeats what it starts with (the room's noise in a pause)."""
    if by > 0:
        return np.concatenate((x[:by], x))[: x.size]
    if by < 0:
        return np.concatenate((x[-by:], np.zeros(-by, x.dtype)))
    return x


def _slipped(
    rng: np.random.Generator, seed: int, total: int, step: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """An answer (the playback) and its echo, already moved ``total`` samples, moving
    ``step`` more 100 ms into its first pause after 1.5 s; and where it moves."""
    play = _playback(rng, 5.0)
    echo = moved(echo_at_mic(play, seed=seed), total)
    start = int(1.5 * RATE)
    sound = np.flatnonzero(np.abs(play[start:]) > 1e-4)
    gaps = np.flatnonzero(np.diff(sound) > RATE // 10)
    at = start + int(sound[gaps[0]]) + RATE // 10  # 100 ms into the pause
    return play, np.concatenate((echo[:at], moved(echo[at:], step))), at


def _warmed(rng: np.random.Generator, seed: int, ms: int) -> tuple[EchoCanceller, VoiceSettings]:
    """A canceller that has heard WARM_S of echo-only answers, as :func:`score_barge_in`
    warms it, and the gate's settings."""
    ec = EchoCanceller(EchoSetup(aec=True))
    s = VoiceSettings("hands_free", echo_mode="aec", barge_in="voice")
    while ec.heard_s < WARM_S:
        play = _playback(rng, 5.0)
        barge_run(echo_at_mic(play, seed=seed), play, s, ms, ec)
    return ec, s


def score_slips(seed: int, answers: int, slip: int, ms: int = 20) -> tuple[int, list[float]]:
    """Echo-only answers through the echo path and one canceller, warmed as
    :func:`score_barge_in` warms it, the echo moving ``slip`` samples in the first pause of
    each answer after its first 1.5 s (later and earlier in turn, and staying there: a path
    that moved stays moved), as a sound server's rewind or a card's restart moves it. The
    answers that cut themselves, and for each how long after its slip (s)."""
    rng = np.random.default_rng(seed)
    ec, s = _warmed(rng, seed, ms)
    where: list[float] = []
    total = 0  # the path's move so far
    for k in range(answers):
        step = slip if k % 2 == 0 else -slip
        play, echo, at = _slipped(rng, seed, total, step)
        total += step
        hits = barge_run(echo, play, s, ms, ec)
        if hits:
            where.append(hits[0] - at / RATE)
    return len(where), where


def score_slip_barge(
    seed: int, answers: int, slip: int, ser_db: float = -5.0, ms: int = 20
) -> tuple[list[float], int]:
    """:func:`score_slips`' answers with a user talking over each at ``ser_db`` from 0.2-1.2 s
    after its slip (while the canceller finds the slip, moves the far end with it and the
    answer proves its delay again): each barge-in's delay (ms; inf: missed) from the user's
    onset, and the answers cut before the user spoke."""
    rng = np.random.default_rng(seed)
    ec, s = _warmed(rng, seed, ms)
    delays: list[float] = []
    early = 0
    total = 0
    for k in range(answers):
        step = slip if k % 2 == 0 else -slip
        play, echo, at = _slipped(rng, seed, total, step)
        total += step
        user = _user(k, echo, ser_db)
        onset = at + int(rng.uniform(0.2, 1.2) * RATE)
        end = min(echo.size, onset + user.size)
        echo[onset:end] += user[: end - onset]
        hits = barge_run(echo, play, s, ms, ec)
        if hits and hits[0] < onset / RATE - 0.02:
            early += 1
            continue
        delays.append((hits[0] - onset / RATE) * 1000 if hits else float("inf"))
    return delays, early
