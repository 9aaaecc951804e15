"""Voice gate quality on the generated corpus (espeak-ng speech, pauses, noise, room echo).

Prints onset recall, the uplink byte ratio of a ~10%-speech hands-free minute, endpoint
latency after the true speech end (median, p95), the premature-cut rate, false barge-ins on
echo-only playback and barge-in detection within 300 ms on double-talk; then the same
figures with 10 and 30 ms microphone frames (``audio.input.period_ms``), which should match.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from agentd.voice.gate import VoiceSettings
from tests import corpus, voice_eval


def period_figures(ms: int) -> dict[str, float]:
    """Onset recall, endpoint latency and barge-in figures with ``ms`` microphone frames."""
    s = VoiceSettings("hands_free")
    scores = [
        voice_eval.score_gate(
            corpus.scene(corpus.PHRASES + corpus.PAUSED_PHRASES, np.random.default_rng(seed)), s, ms
        )
        for seed in range(3)
    ]
    lat = [v for x in scores for v in x.latencies_ms]
    barge = [voice_eval.score_barge_in(seed, 24, ms=ms) for seed in (3, 7, 11)]
    return {
        "onset_recall": sum(x.onsets_caught for x in scores) / sum(x.onsets for x in scores),
        "endpoint_median_ms": float(np.median(lat)),
        "endpoint_p95_ms": float(np.percentile(lat, 95)),
        "false_barge_ins": float(sum(b.false_barge_ins for b in barge)),
        "barge_in_detection": sum(b.detected_in_time for b in barge)
        / sum(b.double_talk for b in barge),
    }


def main() -> dict[str, float]:
    s = VoiceSettings("hands_free")
    scores = [
        voice_eval.score_gate(
            corpus.scene(corpus.PHRASES + corpus.PAUSED_PHRASES, np.random.default_rng(seed)), s
        )
        for seed in range(3)
    ]
    onsets = sum(x.onsets for x in scores)
    caught = sum(x.onsets_caught for x in scores)
    lat = [v for x in scores for v in x.latencies_ms]
    premature = sum(x.premature for x in scores) / sum(x.utterances for x in scores)
    sparse = corpus.sparse_scene(np.random.default_rng(7), total_s=60)
    sp = voice_eval.score_gate(sparse, s)
    speech_frac = sum(b - a for a, b in sparse.spans) / sparse.audio.size
    barge = [voice_eval.score_barge_in(seed, 24) for seed in (3, 7, 11)]
    false = sum(b.false_barge_ins for b in barge)
    echo_runs = sum(b.echo_runs for b in barge)
    detected = sum(b.detected_in_time for b in barge) / sum(b.double_talk for b in barge)
    delays = [d for b in barge for v in b.delays_ms.values() for d in v]
    out = {
        "onset_recall": caught / onsets,
        "uplink_ratio": sp.uplink_ratio,
        "endpoint_median_ms": float(np.median(lat)),
        "endpoint_p95_ms": float(np.percentile(lat, 95)),
        "premature_rate": premature,
        "false_barge_ins": float(false),
        "barge_in_detection": detected,
    }
    print(f"onset recall: {caught}/{onsets} = {out['onset_recall']:.0%} (target 100%)")
    print(
        f"uplink bytes, {speech_frac:.0%}-speech minute: {out['uplink_ratio']:.1%} of continuous (target ≤ 20%)"
    )
    print(
        f"endpoint latency after speech end: median {out['endpoint_median_ms']:.0f} ms, "
        f"p95 {out['endpoint_p95_ms']:.0f} ms (target ≤ 400 ms median); premature cuts "
        f"{out['premature_rate']:.1%} (target ≤ 2%)"
    )
    print(f"false barge-ins on echo-only playback: {false} in {echo_runs} runs of 5 s (target 0)")
    print(
        f"barge-in in time (500/1000 ms at SER -5/-10 dB, echo path rig + canceller): "
        f"{detected:.0%} of {sum(b.double_talk for b in barge)} double-talk cases, "
        f"median delay {np.median(delays):.0f} ms (bench/echo.py has the full figures)"
    )
    for ms in (10, 30):
        p = period_figures(ms)
        out.update({f"{k}_{ms}ms": v for k, v in p.items()})
        print(
            f"with {ms} ms frames: onset recall {p['onset_recall']:.0%}, endpoint median "
            f"{p['endpoint_median_ms']:.0f} ms, p95 {p['endpoint_p95_ms']:.0f} ms, false "
            f"barge-ins {p['false_barge_ins']:.0f}, barge-in in time "
            f"{p['barge_in_detection']:.0%}"
        )
    return out


if __name__ == "__main__":
    main()
