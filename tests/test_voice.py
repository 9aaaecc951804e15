"""Voice gate: pre-roll, min speech, endpointing, echo suppression, barge-in (issue 5)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from agentd.audio.frame import AudioFrame
from agentd.voice.barge_in import NEED_MS
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
    """Component path (echo path rig's DSP + the canceller + the gate): no echo-only answer
    is cut; most talk-overs at SER -5/-10 dB are caught within 500/1000 ms."""
    sc = voice_eval.score_barge_in(seed=3, cases=16)
    assert sc.false_barge_ins == 0
    assert sc.detection_rate >= 0.85


# ------------------------------------------------------------------ any frame period (issue 20)

PERIODS = (10, 20, 30)  # audio.input.period_ms: the frame lengths webrtcvad takes


def timeline(
    ms: int, voiced: list[tuple[int, int]], total_ms: int
) -> tuple[list[AudioFrame], Callable[[bytes], bool]]:
    """Frames of ``ms`` for ``total_ms``, loud inside the ``voiced`` [start, end) spans (ms),
    and a VAD that is exactly that truth."""
    frames = [
        loud(i, ms) if any(a <= i * ms < b for a, b in voiced) else silent(i, ms)
        for i in range(total_ms // ms)
    ]
    return frames, lambda pcm: any(pcm)


def up(ms: int, frame_ms: int) -> float:
    """``ms`` rounded up to whole frames, in seconds: a duration can only end on a frame."""
    return -(-ms // frame_ms) * frame_ms / 1000


@pytest.mark.parametrize("ms", PERIODS)
def test_preroll_min_speech_and_hangover_are_the_configured_ms_at_every_period(ms: int) -> None:
    """Speech from 600 to 1500 ms: the audio sent starts 300 ms before it, the turn opens once
    150 ms of it were heard, and ends 500 ms after it, whatever the frame length (rounded up
    to whole frames: 150 ms are 160 ms of 20 ms frames, 500 ms are 510 ms of 30 ms frames)."""
    s = VoiceSettings("hands_free", preroll_ms=300, min_speech_ms=150, hangover_ms=500)
    frames, vad = timeline(ms, [(600, 1500)], 3000)
    gate = VoiceGate(s, is_speech=vad)
    events = [(f, e) for f in frames for e in gate.process(f)]
    sent = [e.frame for _, e in events if isinstance(e, Audio)]
    started = [(f, e) for f, e in events if isinstance(e, SpeechStarted)]
    ended = [e for _, e in events if isinstance(e, SpeechEnded)]
    assert sent[0].timestamp == pytest.approx(0.6 - 0.3)  # pre-roll
    assert len(started) == 1 and started[0][1].t == pytest.approx(0.3)
    assert started[0][0].end == pytest.approx(0.6 + up(150, ms))  # min_speech_ms
    assert len(ended) == 1 and ended[0].t == pytest.approx(1.5 + up(500, ms))  # hangover
    assert gate.sent_ms == sum(f.milliseconds for f in sent) == round((ended[0].t - 0.3) * 1000)


@pytest.mark.parametrize("ms", PERIODS)
def test_a_burst_shorter_than_min_speech_is_not_sent_at_every_period(ms: int) -> None:
    s = VoiceSettings("hands_free", min_speech_ms=150)
    frames, vad = timeline(ms, [(600, 720), (1500, 1620)], 3000)  # 120 ms each
    gate = VoiceGate(s, is_speech=vad)
    assert [e for f in frames for e in gate.process(f)] == []


@pytest.mark.parametrize("ms", PERIODS)
def test_push_to_talk_preroll_is_the_configured_ms_at_every_period(ms: int) -> None:
    s = VoiceSettings("push_to_talk", preroll_ms=120)
    frames, vad = timeline(ms, [(900, 1200)], 1500)
    gate = VoiceGate(s, is_speech=vad)
    gate.press()
    sent = [e.frame for f in frames for e in gate.process(f) if isinstance(e, Audio)]
    assert sent[0].timestamp == pytest.approx(0.9 - 0.12)
    assert gate.sent_ms == 1500 - 900 + 120


@pytest.mark.parametrize("ms", PERIODS)
def test_echo_tail_is_the_configured_ms_at_every_period(ms: int) -> None:
    """The mic opens with the first frame that began after the tail, not a frame earlier."""
    s = VoiceSettings("hands_free", tail_ms=250, min_speech_ms=40)
    gate = VoiceGate(s, is_speech=lambda f: True)
    sent = []
    for i in range(2000 // ms):
        f = loud(i, ms)
        sp = Speaker(busy=f.timestamp < 1.0, last_played_at=1.0)
        sent += [e.frame.timestamp for e in gate.process(f, sp) if isinstance(e, Audio)]
    first_open = -(-1250 // ms) * ms / 1000  # the first frame starting at or after 1.25 s
    assert min(sent) == pytest.approx(first_open)


@pytest.mark.parametrize("ms", PERIODS)
def test_voice_barge_in_needs_the_same_double_talk_time_at_every_period(ms: int) -> None:
    """The user talks over the answer from 1.2 s on (on the cancelled signal, aec): the
    barge-in comes after NEED_MS of it at every frame length."""
    s = VoiceSettings("hands_free", echo_mode="aec", barge_in="voice")
    frames, vad = timeline(ms, [(1200, 2400)], 2400)
    gate = VoiceGate(s, is_speech=vad)
    barge = [e for f in frames for e in gate.process(f, Speaker(busy=True))]
    assert barge and isinstance(barge[0], BargeIn)
    assert barge[0].t == pytest.approx(1.2 + up(NEED_MS, ms))


def test_voice_barge_in_needs_aec_in_the_gate_too() -> None:
    """Half-duplex never hands the mic to the barge-in policy (check-config refuses the pair;
    the gate does not act on it either)."""
    s = VoiceSettings("hands_free", echo_mode="half_duplex", barge_in="voice")
    frames, vad = timeline(20, [(0, 2400)], 2400)
    gate = VoiceGate(s, is_speech=vad)
    assert not [e for f in frames for e in gate.process(f, Speaker(busy=True))]


def test_a_frame_the_vad_cannot_take_is_named() -> None:
    gate = VoiceGate(VoiceSettings("hands_free"))
    with pytest.raises(ValueError, match="10, 20 or 30 ms, got 16000 Hz 16-bit ×1 of 400"):
        gate.process(AudioFrame(bytes(800), 16000))  # 25 ms
    with pytest.raises(ValueError, match="got 48000 Hz"):
        gate.process(AudioFrame(bytes(1920), 48000))


def _turns(rec: corpus.Recording, ms: int) -> tuple[np.ndarray, np.ndarray]:
    gate = VoiceGate(VoiceSettings("hands_free"))
    starts, ends = [], []
    for f in corpus.frames(rec.audio, ms):
        for e in gate.process(f):
            if isinstance(e, SpeechStarted):
                starts.append(e.t)
            elif isinstance(e, SpeechEnded):
                ends.append(e.t)
    return np.array(starts), np.array(ends)


@pytest.mark.parametrize("ms", [10, 30])
def test_corpus_onsets_and_endpoints_do_not_depend_on_the_period(ms: int) -> None:
    """The same espeak speech cut into 10 or 30 ms frames opens and ends its turns when 20 ms
    frames do: every onset within one frame, endpoints within one frame at the median. (The
    VAD itself decides a little differently on shorter or longer frames near a word's tail,
    up to two frames; and the adaptive hangover learns from pauses measured in whole frames:
    at 30 ms a 210 ms pause taught 250 ms, counted as 270, while at 20 ms the same pause,
    200 ms, left the 240 ms default: one frame more.) With FRAME_MS = 20 the endpoints moved
    by -250 and +250 ms."""
    rec = corpus.scene(corpus.PHRASES, np.random.default_rng(0))
    ref_starts, ref_ends = _turns(rec, 20)
    starts, ends = _turns(rec, ms)
    frame_s = max(ms, 20) / 1000
    assert starts.size == ends.size == ref_starts.size == len(rec.spans)
    assert np.abs(starts - ref_starts).max() <= frame_s + 1e-9
    assert abs(float(np.median(ends - ref_ends))) <= frame_s + 1e-9
    assert np.abs(ends - ref_ends).max() <= 3 * 0.03 + 1e-9


@pytest.mark.parametrize("ms", [pytest.param(10, marks=pytest.mark.slow), 30])
def test_corpus_barge_in_at_other_periods(ms: int) -> None:
    """No false barge-in on echo at another frame length, and double talk is caught no slower
    than with 20 ms frames (median, within one frame). 10 ms frames let the VAD miss a little
    more of a quiet onset, hence 85 % here against 90 % at 20 ms."""
    ref = voice_eval.score_barge_in(seed=3, cases=16)
    sc = voice_eval.score_barge_in(seed=3, cases=16, ms=ms)
    assert sc.false_barge_ins == 0
    assert sc.detection_rate >= 0.8
    # trial by trial (the same talk-overs at both periods; a median of 16 trials' delays
    # moved by a third of a second as one middle trial changed places)
    got, want = ([d for v in x.delays_ms.values() for d in v] for x in (sc, ref))
    slower = [g - w if g != w else 0.0 for g, w in zip(got, want, strict=True)]  # (inf, inf)
    assert np.median(slower) <= max(ms, 20) * 2
