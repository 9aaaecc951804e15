"""Full duplex (issue 22): the echo canceller and voice barge-in on the echo path rig.

Component path (agentd/sim/echo_path.py's loudspeaker, RT60 0.3 s room, 100 ppm drift and
40 dB SNR noise applied to espeak-ng speech, then agentd/audio/echo.py exactly as the daemon
runs it, the far end handed over as Playback's writer hands it): ERLE (median, p10, within
0.5 s of playback onset, with and without drift), double-talk attenuation and correlation,
barge-in latency at SER -5/-10 dB over ≥ 40 trials each and false barge-ins over ≥ 50
echo-only answers, CPU per audio-second of cancel + VAD against the half-duplex path (VAD
only), RSS delta, and noise suppression's speech-to-noise gain.

End to end (``--e2e``): the real daemon, the simulator and the PulseAudio room (plain and
through the rig) answering questions with nobody talking over them, at 1× and 5× delivery.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from agentd.audio.echo import EchoCanceller, EchoSetup
from agentd.audio.frame import AudioFrame
from tests import corpus, voice_eval
from tests.corpus import RATE

BLOCK = RATE // 10  # ERLE is measured per 100 ms


def _speech(seconds: float, seed: int = 5) -> np.ndarray:
    return voice_eval._playback(np.random.default_rng(seed), seconds)


def _db(x: np.ndarray) -> float:
    return 10 * float(np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-12))


def _cancelled(mic: np.ndarray, play: np.ndarray, ec: EchoCanceller | None = None) -> np.ndarray:
    return np.concatenate([f.floats() for f in voice_eval.cancel(mic, play, 20, ec)])


def erle_figures(seconds: float = 30, drift_ppm: float = 100.0) -> dict[str, float]:
    """ERLE on far-end-only speech: per 100 ms block where the echo is above the noise."""
    play = np.concatenate([np.zeros(RATE // 2, np.float32), _speech(seconds)])
    echo = voice_eval.echo_at_mic(play, drift_ppm=drift_ppm)
    out = _cancelled(echo, play)
    n = min(out.size, echo.size)
    onset = RATE // 2
    erle, early = [], []
    for i in range(0, n - BLOCK, BLOCK):
        e = echo[i : i + BLOCK]
        if _db(e) < -50:  # the echo must be there to be cancelled
            continue
        v = _db(e) - _db(out[i : i + BLOCK])
        erle.append(v)
        if onset <= i < onset + RATE // 2:
            early.append(v)
    return {
        "erle_median_db": float(np.median(erle)),
        "erle_p10_db": float(np.percentile(erle, 10)),
        "erle_onset_db": float(np.median(early)),
    }


def double_talk_figures() -> dict[str, float]:
    """Near-end speech kept while the echo plays: its attenuation at SER -10 dB (cancelled
    output against the clean near end, over the near end's voiced blocks) and the
    correlation of the cancelled capture with the clean near end at SER 0 dB (at the lag
    where it is highest: the canceller delays its output a little)."""
    play = _speech(8.0, seed=9)
    echo = voice_eval.echo_at_mic(play)
    ec = EchoCanceller(EchoSetup(aec=True))
    _cancelled(echo, play, ec)  # converged on this room first, as a device is
    user = corpus.utterance(corpus.PHRASES[4]) * 1.0
    out: dict[str, float] = {}
    for ser in (-10.0, 0.0):
        u = np.zeros_like(echo)
        onset = RATE * 2
        k = min(user.size, u.size - onset)
        voiced_echo = echo[np.abs(echo) > 1e-3]
        gain = float(np.sqrt(np.mean(voiced_echo**2))) / float(
            np.sqrt(np.mean(user[np.abs(user) > 1e-3] ** 2))
        )
        u[onset : onset + k] = user[:k] * gain * 10 ** (ser / 20)
        y = _cancelled(echo + u, play, ec)[: u.size]
        blocks = [
            (i, i + BLOCK)
            for i in range(onset, onset + k - BLOCK, BLOCK)
            if _db(u[i : i + BLOCK]) > _db(u[onset : onset + k]) - 6
        ]
        att = float(np.median([_db(u[a:b]) - _db(y[a:b]) for a, b in blocks]))
        corr = max(  # the canceller's output lags its input by a few ms (8 ms here)
            float(np.corrcoef(y[onset + lag : onset + k], u[onset : onset + k - lag])[0, 1])
            for lag in range(0, RATE // 40)
        )
        tag = "m10" if ser < 0 else "0"
        out[f"attenuation_db_ser_{tag}"] = att
        out[f"correlation_ser_{tag}"] = corr
    return out


def cpu_figures(seconds: float = 20) -> dict[str, float]:
    """CPU ms per audio-second: cancel + VAD (aec) against VAD alone (half duplex)."""
    import webrtcvad

    play = _speech(seconds, seed=2)
    mic = voice_eval.echo_at_mic(play)
    frames = corpus.frames(mic, 20)
    vad = webrtcvad.Vad(2)
    t = time.process_time()
    for f in frames:
        vad.is_speech(f.audio, RATE)
    half = (time.process_time() - t) / seconds * 1000
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ec = EchoCanceller(EchoSetup(aec=True))
    far = np.frombuffer(bytes(AudioFrame.from_floats(play, RATE).audio), "<i2")
    t = time.process_time()
    for f in frames:
        i = round(f.timestamp * RATE)
        ec.far.written(far[i : i + f.samples], RATE, i / RATE)
        vad.is_speech(ec.process(f).audio, RATE)
    aec = (time.process_time() - t) / seconds * 1000
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "cpu_ms_per_s_aec": aec,
        "cpu_ms_per_s_half": half,
        "cpu_ratio": aec / max(half, 1e-9),
        "rss_delta_mb": (rss1 - rss0) / 1024,
    }


def ns_figures() -> dict[str, float]:
    """Speech-to-noise gain of local noise suppression (level 3 = 18 dB) on speech in the
    rig's noise raised to 15 dB SNR, and onset loss (speech energy in its first 100 ms)."""
    rng = np.random.default_rng(4)
    speech = corpus.utterance(corpus.PHRASES[2]) * 0.5
    pad = np.zeros(RATE, np.float32)
    clean = np.concatenate([pad, speech, pad])
    noise = rng.standard_normal(clean.size) * 10 ** (-15 / 20) * np.sqrt(np.mean(speech**2))
    mic = (clean + noise).astype(np.float32)
    ec = EchoCanceller(EchoSetup(noise_suppression=3))
    y = np.concatenate([ec.process(f).floats() for f in corpus.frames(mic, 20)])
    s = slice(RATE, RATE + speech.size)
    n = slice(0, RATE)
    before = _db(mic[s]) - _db(mic[n])
    after = _db(y[s]) - _db(y[n])
    onset = slice(RATE, RATE + RATE // 10)
    return {
        "ns_snr_gain_db": after - before,
        "ns_onset_loss_db": (_db(mic[onset]) - _db(y[onset])) - (_db(mic[s]) - _db(y[s])),
    }


def barge_figures(seeds: tuple[int, ...] = (3, 7, 11), cases: int = 28) -> dict[str, float]:
    """Component path: false barge-ins on echo-only answers (incl. a fresh canceller) and
    barge-in latency p95 at SER -5 and -10 dB."""
    scores = [voice_eval.score_barge_in(seed, cases) for seed in seeds]
    d5 = [d for s in scores for d in s.delays_ms[-5.0]]
    d10 = [d for s in scores for d in s.delays_ms[-10.0]]
    return {
        "echo_only_answers": float(sum(s.echo_runs for s in scores)),
        "false_barge_ins": float(sum(s.false_barge_ins for s in scores)),
        "trials_ser_m5": float(len(d5)),
        "trials_ser_m10": float(len(d10)),
        "barge_p95_ms_ser_m5": float(np.percentile(d5, 95)),
        "barge_p95_ms_ser_m10": float(np.percentile(d10, 95)),
        "barge_median_ms_ser_m10": float(np.median(d10)),
    }


def main() -> dict[str, float]:
    out: dict[str, float] = {}
    e = erle_figures()
    nodrift = erle_figures(drift_ppm=0)
    out.update(e)
    out["erle_median_db_no_drift"] = nodrift["erle_median_db"]
    print(
        f"ERLE far-end only: median {e['erle_median_db']:.1f} dB (≥ 30), p10 "
        f"{e['erle_p10_db']:.1f} dB (≥ 20), first 0.5 s {e['erle_onset_db']:.1f} dB (≥ 20); "
        f"without the 100 ppm drift median {nodrift['erle_median_db']:.1f} dB"
    )
    d = double_talk_figures()
    out.update(d)
    print(
        f"double talk: near end attenuated {d['attenuation_db_ser_m10']:.1f} dB at SER -10 dB "
        f"(≤ 10), correlation with the clean near end {d['correlation_ser_0']:.2f} at 0 dB (≥ 0.8)"
    )
    b = barge_figures()
    out.update(b)
    print(
        f"barge-in (component path): p95 {b['barge_p95_ms_ser_m5']:.0f} ms at SER -5 dB "
        f"(≤ 500, {b['trials_ser_m5']:.0f} trials), p95 {b['barge_p95_ms_ser_m10']:.0f} ms at "
        f"-10 dB (≤ 1000, {b['trials_ser_m10']:.0f} trials); false barge-ins "
        f"{b['false_barge_ins']:.0f} on {b['echo_only_answers']:.0f} echo-only answers (0)"
    )
    c = cpu_figures()
    out.update(c)
    print(
        f"CPU per audio-second: cancel + VAD {c['cpu_ms_per_s_aec']:.2f} ms (≤ 8) vs VAD alone "
        f"{c['cpu_ms_per_s_half']:.2f} ms ({c['cpu_ratio']:.1f}×); RSS delta "
        f"{c['rss_delta_mb']:.1f} MB"
    )
    n = ns_figures()
    out.update(n)
    print(
        f"noise suppression (level 3): speech-to-noise gain {n['ns_snr_gain_db']:.1f} dB, "
        f"onset loss {n['ns_onset_loss_db']:.1f} dB"
    )
    return out


if __name__ == "__main__":
    main()
