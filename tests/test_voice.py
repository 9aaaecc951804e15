"""Voice gate: pre-roll, min speech, endpointing, echo suppression, barge-in (issue 5)."""

from __future__ import annotations

import numpy as np
import pytest

from agentd.audio.frame import AudioFrame
from agentd.voice.gate import (
    Audio,
    BargeIn,
    Speaker,
    SpeechEnded,
    SpeechStarted,
    VoiceGate,
    VoiceSettings,
)
from tests import corpus, voice_eval


def silent(i: int, ms: int = 20) -> AudioFrame:
    """The ``i``-th ``ms`` frame of a recording starting at 0, silent."""
    return AudioFrame(bytes(16 * ms * 2), 16000, timestamp=i * ms / 1000)


def loud(i: int, ms: int = 20) -> AudioFrame:
    """The ``i``-th frame, loud, its content unique to it."""
    samples = np.full(16 * ms, 1000 + i, dtype="<i2").tobytes()
    return AudioFrame(samples, 16000, timestamp=i * ms / 1000)


def scripted(
    pattern: str, settings: VoiceSettings, speaker: Speaker | None = None, ms: int = 20
) -> tuple[VoiceGate, list[tuple[int, object]]]:
    """'s' = speech frame, '.' = silence, 'n' = loud non-speech; the VAD is the pattern itself
    (exact, no model)."""
    truth = {loud(i, ms).audio: c == "s" for i, c in enumerate(pattern)}
    gate = VoiceGate(settings, is_speech=lambda f: truth.get(f, False))
    out = []
    for i, c in enumerate(pattern):
        f = loud(i, ms) if c in "sn" else silent(i, ms)
        for e in gate.process(f, speaker or Speaker()):
            out.append((i, e))
    return gate, out


def audio_frames(out: list[tuple[int, object]], ms: int = 20) -> int:
    return sum(e.frame.milliseconds // ms for _, e in out if isinstance(e, Audio))  # type: ignore[attr-defined]


def test_preroll_is_sent_with_the_onset() -> None:
    s = VoiceSettings("hands_free", preroll_ms=200, min_speech_ms=100, hangover_ms=200)
    _, out = scripted("." * 30 + "s" * 20 + "." * 20, s)
    first = next(e for _, e in out if isinstance(e, Audio))
    assert first.frame.timestamp == pytest.approx((30 - 10) * 0.02)  # 200 ms before the onset
    assert isinstance(out[0][1], SpeechStarted)


def test_bursts_shorter_than_min_speech_are_not_sent() -> None:
    s = VoiceSettings("hands_free", min_speech_ms=150)
    _, out = scripted("." * 20 + "sss" + "." * 30 + "ss" + "." * 30, s)
    assert out == []


def test_internal_pause_shorter_than_hangover_keeps_the_turn() -> None:
    s = VoiceSettings("toggle", hangover_ms=500, min_speech_ms=100)
    _, out = scripted("." * 10 + "s" * 30 + "." * 15 + "s" * 30 + "." * 40, s)  # 300 ms pause
    ends = [i for i, e in out if isinstance(e, SpeechEnded)]
    assert len(ends) == 1 and ends[0] == 10 + 30 + 15 + 30 + 25 - 1  # 500 ms after the end
    assert len([e for _, e in out if isinstance(e, SpeechStarted)]) == 1


def test_push_to_talk_drops_only_leading_silence_beyond_preroll() -> None:
    s = VoiceSettings("push_to_talk", preroll_ms=100)
    gate = VoiceGate(s, is_speech=lambda f: any(f))
    gate.press()
    pattern = "." * 25 + "s" * 10 + "." * 30 + "s" * 5 + "." * 3  # trailing and inner silence kept
    sent = []
    for i, c in enumerate(pattern):
        sent += [
            e for e in gate.process(loud(i) if c == "s" else silent(i)) if isinstance(e, Audio)
        ]
    gate.release()
    frames = sum(e.frame.samples // 320 for e in sent)
    assert frames == 5 + len(pattern) - 25  # 100 ms pre-roll + everything from the onset
    assert gate.sent_ms == frames * 20


def test_echo_suppressed_while_playing_and_for_the_tail_after_last_played() -> None:
    s = VoiceSettings("hands_free", tail_ms=250, min_speech_ms=40)
    gate = VoiceGate(s, is_speech=lambda f: True)
    last = 1.0
    sent_at = []
    for i in range(100):
        now = i * 0.02
        sp = Speaker(busy=now < last, last_played_at=last)
        if any(isinstance(e, Audio) for e in gate.process(loud(i), sp)):
            sent_at.append(now)
    assert sent_at and min(sent_at) >= last + 0.25 - 1e-9
    assert gate.suppressed_frames == int(np.ceil((last + 0.25) / 0.02))  # frames before 1.25 s


def test_echo_mode_off_passes_audio_during_playback() -> None:
    s = VoiceSettings("hands_free", echo_mode="off", min_speech_ms=40)
    _, out = scripted("s" * 10, s, Speaker(busy=True, last_played_at=99))
    assert audio_frames(out) > 0


def test_button_barge_in_mode_never_fires_on_voice() -> None:
    s = VoiceSettings("hands_free", barge_in="button")
    _, out = scripted("s" * 50, s, Speaker(busy=True))
    assert not [e for _, e in out if isinstance(e, BargeIn)]


# ------------------------------------------------------------------ corpus thresholds


def test_corpus_onsets_endpoints_and_cuts() -> None:
    rng = np.random.default_rng(11)
    rec = corpus.scene(corpus.PHRASES[:8], rng)
    sc = voice_eval.score_gate(rec, VoiceSettings("hands_free"))
    assert sc.onset_recall == 1.0
    assert sc.premature_rate <= 0.02
    assert len(sc.latencies_ms) == sc.utterances
    assert float(np.percentile(sc.latencies_ms, 95)) <= 500 + 200  # hangover + VAD lag


def test_corpus_uplink_bytes_for_sparse_speech() -> None:
    rec = corpus.sparse_scene(np.random.default_rng(5), total_s=40)
    sc = voice_eval.score_gate(rec, VoiceSettings("hands_free"))
    assert sc.onset_recall == 1.0
    assert sc.uplink_ratio <= 0.20


def test_corpus_barge_in_no_false_triggers_and_fast_detection() -> None:
    sc = voice_eval.score_barge_in(seed=3, cases=16)
    assert sc.false_barge_ins == 0
    assert sc.detection_rate >= 0.9
