"""Scores of the voice gate on the generated corpus (used by tests and bench/voice_quality.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agentd.audio.frame import AudioFrame
from agentd.voice.gate import (
    Audio,
    BargeIn,
    ReferenceTrack,
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


def barge_run(
    mic: np.ndarray, playback: np.ndarray, settings: VoiceSettings, ms: int = 20
) -> list[float]:
    """Feed ``mic`` as ``ms`` frames while ``playback`` plays (speaker busy); return barge-in
    times."""
    ref = ReferenceTrack(keep_s=60)
    ref.add(AudioFrame.from_floats(playback, RATE))
    gate = VoiceGate(settings, reference=ref)
    out = []
    for f in corpus.frames(mic, ms):
        for e in gate.process(f, Speaker(busy=f.end < playback.size / RATE)):
            if isinstance(e, BargeIn):
                out.append(e.t)
    return out


@dataclass
class BargeScores:
    echo_runs: int
    false_barge_ins: int
    double_talk: int
    detected_in_time: int
    delays_ms: list[float]

    @property
    def detection_rate(self) -> float:
        return self.detected_in_time / max(1, self.double_talk)


def score_barge_in(
    seed: int, cases: int, levels_db: tuple[float, ...] = (-30, -20, -12, -6), ms: int = 20
) -> BargeScores:
    rng = np.random.default_rng(seed)
    s = VoiceSettings("hands_free", barge_in="voice")
    false = runs = 0
    detected, delays = 0, []
    for c in range(cases):
        play = _playback(rng, 5.0)
        level = levels_db[c % len(levels_db)]
        echo = corpus.echo_of(play, level, rng)
        mic = echo + corpus.noise(echo.size, rng)
        false += len(barge_run(mic, play, s, ms))
        runs += 1
        user = corpus.utterance(corpus.PHRASES[(c * 5 + 3) % len(corpus.PHRASES)]) * 0.5
        onset = int(rng.uniform(1.5, 3.0) * RATE)
        dt = mic.copy()
        end = min(dt.size, onset + user.size)
        dt[onset:end] += user[: end - onset]
        hits = [t for t in barge_run(dt, play, s, ms) if t >= onset / RATE - 0.02]
        if hits and hits[0] - onset / RATE <= 0.3:
            detected += 1
        if hits:
            delays.append((hits[0] - onset / RATE) * 1000)
    return BargeScores(runs, false, cases, detected, delays)
