"""Experiment for issue 22: bench/echo.py's component figures with AEC3's own config.

Runs ERLE, double talk, component false barge-ins and CPU with agentd's pywebrtc-audio
build (the 0.2.0 sdist plus ``scripts/lib/pywebrtc-audio-aec3-config.patch``: its
``EchoCanceller`` takes ``config={"dotted.field": value}``; scripts/test puts it in .venv),
or another build put first on the path by ``--site``; ``--stock`` passes no config (the
build then computes exactly what the released wheel does). The named config is handed to
every ``EchoCanceller`` the daemon's code makes (the module attribute is wrapped), so
bench/echo.py runs unchanged. Usage:

    .venv/bin/python bench/aec3_config.py [--site DIR] CONFIG [PARTS] [--drift PPM] [--comp PPM]

``--comp PPM``: the far end the canceller gets is resampled by 1 + PPM·1e-6 in FarEnd's own
resampler (the daemon's far-end tap), streaming: the drift compensated where the daemon would.
Part ``estimate``: the drift estimated online (agentd/audio/drift.py) from the far end and
the microphone alone, by seconds of far-end sound; ``drift_cpu``: its CPU. ``--online``: the
far end resampled by FarEnd's own online estimate (as the daemon does with the tuned config).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench, tests: the checkout's

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    # our FarEnd timeline + Aligner already align the far end: skip AEC3's matched filters
    "extdelay": {"delay.use_external_delay_estimator": True},
    "extdelay16": {"delay.use_external_delay_estimator": True, "stream_delay_ms": 16},
    "filters2": {"delay.num_filters": 2},
    "filters3": {"delay.num_filters": 3},
    # the suppressor toward transparency: the normal tuning's masks up (no gain cut until
    # the residual echo-to-nearend ratio is higher: a), the nearend state (its transparent
    # tuning) entered sooner and held longer (b), both (c), masks far up (d); the residual
    # echo estimated from a better trusted linear filter (ERLE caps, 6/1.8 dB by default: e, f)
    "supp_a": {
        "suppressor.normal_tuning.mask_lf.enr_transparent": 0.5,
        "suppressor.normal_tuning.mask_lf.enr_suppress": 0.7,
        "suppressor.normal_tuning.mask_hf.enr_transparent": 0.15,
        "suppressor.normal_tuning.mask_hf.enr_suppress": 0.25,
    },
    "supp_b": {
        "suppressor.dominant_nearend_detection.enr_threshold": 1.0,
        "suppressor.dominant_nearend_detection.snr_threshold": 10.0,
        "suppressor.dominant_nearend_detection.trigger_threshold": 6,
        "suppressor.dominant_nearend_detection.hold_duration": 100,
    },
    "supp_c": {
        "suppressor.normal_tuning.mask_lf.enr_transparent": 0.5,
        "suppressor.normal_tuning.mask_lf.enr_suppress": 0.7,
        "suppressor.normal_tuning.mask_hf.enr_transparent": 0.15,
        "suppressor.normal_tuning.mask_hf.enr_suppress": 0.25,
        "suppressor.dominant_nearend_detection.enr_threshold": 1.0,
        "suppressor.dominant_nearend_detection.snr_threshold": 10.0,
        "suppressor.dominant_nearend_detection.trigger_threshold": 6,
        "suppressor.dominant_nearend_detection.hold_duration": 100,
    },
    "supp_d": {
        "suppressor.normal_tuning.mask_lf.enr_transparent": 1.0,
        "suppressor.normal_tuning.mask_lf.enr_suppress": 1.5,
        "suppressor.normal_tuning.mask_hf.enr_transparent": 0.3,
        "suppressor.normal_tuning.mask_hf.enr_suppress": 0.6,
        "suppressor.normal_tuning.max_dec_factor_lf": 0.5,
    },
    "supp_e": {"erle.max_l": 8.0, "erle.max_h": 3.0},
    "supp_f": {"erle.max_l": 16.0, "erle.max_h": 8.0},
    # the linear filter longer than the room's reverberation (13 blocks: 52 ms; RT60 0.3 s)
    "long26": {"filter.main.length_blocks": 26, "filter.shadow.length_blocks": 26},
    "long40": {"filter.main.length_blocks": 40, "filter.shadow.length_blocks": 40},
}
EXT = {"delay.use_external_delay_estimator": True}
CONFIGS["ext_long26"] = EXT | CONFIGS["long26"]
CONFIGS["ext_long40"] = EXT | CONFIGS["long40"]
CONFIGS["ext_supp_a"] = EXT | CONFIGS["supp_a"]
CONFIGS["ext_supp_c"] = EXT | CONFIGS["supp_c"]
CONFIGS["long40_supp_a"] = CONFIGS["long40"] | CONFIGS["supp_a"]
CONFIGS["ext_supp_e"] = EXT | CONFIGS["supp_e"]
CONFIGS["ext_long40_supp_a"] = CONFIGS["ext_long40"] | CONFIGS["supp_a"]
CONFIGS["ext_long40_supp_f"] = CONFIGS["ext_long40"] | CONFIGS["supp_f"]
CONFIGS["ext_supp_b"] = EXT | CONFIGS["supp_b"]
# the suppressor's masks at Validate()'s limit: what the linear filter alone removes
CONFIGS["linear"] = {
    f"suppressor.{t}.mask_{b}.{k}": v
    for t in ("normal_tuning", "nearend_tuning")
    for b in ("lf", "hf")
    for k, v in (("enr_transparent", 99.0), ("enr_suppress", 100.0))
}
CONFIGS["ext_long40_linear"] = CONFIGS["ext_long40"] | CONFIGS["linear"]


def compensate(ppm: float) -> None:
    """Resample the far end by the clock drift ``ppm`` in FarEnd's own resampler (soxr,
    streaming, exact ratio): 16 kHz is handed out at 16 kHz·(1 + ppm·1e-6) on the timeline.
    At 16 kHz in (the component path) on soxr's steady engine: the fixed-rate one held back
    58 ms at this ratio, as much as the writer's 60 ms lead (15 ms steady); at 48 kHz (the
    card, the CPU figure) the daemon's MQ engine (37 ms held back, as 48 -> 16 kHz). FarEnd's
    silence skip places zeros at the nominal ratio: off, so the timeline stays exact. A drop
    discards what the resampler holds: bench/echo.py restarts its times at 0 after each drop
    (one canceller, several runs), and the held tail, flushed at the new stream's start, was
    placed at the old stream's end, ahead of all of the new one: FarEnd.take then found no
    far end until FAR_KEEP_S had passed (326 false barge-ins of 84). (The daemon's times only
    grow; its 48 kHz tail after a drop lands where the dropped audio would have played.)"""

    from agentd.audio import echo
    from agentd.audio.resample import StreamResampler

    def made(in_rate: int, out_rate: int, quality: str = "HQ", steady: bool = False) -> Any:
        steady = steady or in_rate == out_rate
        return StreamResampler(in_rate, out_rate * (1 + ppm * 1e-6), quality, steady)  # type: ignore[arg-type]

    dropped = echo.FarEnd.dropped

    def drop(self: echo.FarEnd, at: float | None = None) -> None:
        dropped(self, at)
        self._rs = None

    echo.StreamResampler = made  # type: ignore[assignment,misc]
    echo.FarEnd.dropped = drop  # type: ignore[method-assign]
    echo.SKIP_SILENT_S = math.inf


def online() -> None:
    """The far end compensated by FarEnd's own online estimate (agentd/audio/drift.py), as
    the daemon's canceller does with the tuned config: every FarEnd made has ``compensate``
    set (the runner's --comp aside)."""
    from agentd.audio import echo

    init = echo.FarEnd.__init__

    def made(self: echo.FarEnd, *args: Any, **kw: Any) -> None:
        init(self, *args, **kw)
        self.compensate = True

    echo.FarEnd.__init__ = made  # type: ignore[method-assign]


def estimate_figures(drifts: tuple[float, ...] = (100.0, -100.0, 37.0)) -> dict[str, Any]:
    """agentd's online estimator on 30 s of far-end speech through the rig (three rooms per
    drift), fed in 20 ms frames: its estimate once it has had S s of far-end sound (S = 2,
    4, 5, 6, 8, 10; it stops once sure, ~10 s), the worst error over the rooms per S, and
    the first S from which every later estimate is within 10 ppm."""
    from bench import echo
    from tests import voice_eval

    out: dict[str, Any] = {}
    marks = (2.0, 4.0, 5.0, 6.0, 8.0, 10.0)
    worst: dict[float, float] = {}
    for drift in drifts:
        for seed in (1, 2, 3):
            play = echo._speech(30, seed=seed + 4)
            mic = voice_eval.echo_at_mic(play, seed=seed, drift_ppm=drift)
            trace = _trace(play, mic)
            est = {m: next((e for s, e in trace if s >= m), None) for m in marks}
            for m, e in est.items():
                worst[m] = max(worst.get(m, 0.0), math.inf if e is None else abs(e - drift))
            bad = [s for s, e in trace if e is None or abs(e - drift) > 10]
            tag = f"{drift:g}ppm_room{seed}"
            out[f"est_{tag}"] = {m: None if e is None else round(e, 1) for m, e in est.items()}
            out[f"within10_from_sound_s_{tag}"] = max(bad) + 0.5 if bad else 0.0
    out["worst_error_ppm_by_sound_s"] = {m: round(v, 1) for m, v in worst.items()}
    return out


def _trace(play: np.ndarray, mic: np.ndarray) -> list[tuple[float, float | None]]:
    """(far-end sound so far, estimate) per 20 ms frame of agentd's estimator."""
    from agentd.audio.drift import DriftEstimator
    from agentd.audio.pcm import to_int16

    d = DriftEstimator()
    f16, m16 = (np.frombuffer(to_int16(v), "<i2") for v in (play, mic))
    out = []
    for i in range(0, min(f16.size, m16.size) - 320 + 1, 320):
        out.append((d.sound_s, d.feed(f16[i : i + 320], m16[i : i + 320])))
    return out


def _duty_cycle() -> np.ndarray:
    """RECHECK_S (10 min) of a device's far end, its last answer whole: an answer of 2-8 s
    every 30-60 s, silence between (16 kHz float)."""
    from agentd.audio.drift import RECHECK_S
    from bench import echo
    from tests.corpus import RATE

    rng = np.random.default_rng(4)
    parts, n = [], 0
    while n < RECHECK_S * RATE:
        gap = np.zeros(int(rng.uniform(30, 60) * RATE), np.float32)
        ans = echo._speech(float(rng.uniform(2, 8)), seed=int(rng.integers(100)))
        parts += [gap, ans]
        n += gap.size + ans.size
    return np.concatenate(parts)


def drift_cpu_figures(runs: int = 2) -> dict[str, float]:
    """The estimator's CPU (process time, lowest of ``runs``): ms per audio-second while it
    runs (continuous far-end speech until it is sure), and its average over a duty cycle:
    10 min of microphone with an answer of 2-8 s every 30-60 s (12-15 % far-end sound), in
    which it measures until sure, then stops (RECHECK_S later it measures again)."""
    from agentd.audio.drift import RECHECK_S, DriftEstimator
    from agentd.audio.pcm import to_int16
    from bench import echo
    from tests import voice_eval
    from tests.corpus import RATE

    play = echo._speech(20, seed=5)
    mic = voice_eval.echo_at_mic(play, seed=2, drift_ppm=100.0)
    duty = _duty_cycle()[: int(RECHECK_S * RATE)]
    duty_mic = voice_eval.echo_at_mic(duty, seed=1, drift_ppm=100.0)

    def run(far: np.ndarray, near: np.ndarray) -> tuple[float, float, DriftEstimator]:
        f16, m16 = (np.frombuffer(to_int16(v), "<i2") for v in (far, near))
        d = DriftEstimator()
        t, k = time.process_time(), 0
        for i in range(0, f16.size - 320 + 1, 320):
            d.feed(f16[i : i + 320], m16[i : i + 320])
            k += 320
            if not d.running:
                break
        return time.process_time() - t, k / RATE, d

    out: dict[str, float] = {}
    runs_cont = [run(play, mic) for _ in range(runs)]
    cpu, secs, d = min(runs_cont, key=lambda r: r[0])
    out["drift_running_ms_per_s"] = cpu / secs * 1000
    out["drift_running_audio_s"] = secs
    f16, m16 = (np.frombuffer(to_int16(v), "<i2") for v in (duty, duty_mic))
    best = math.inf
    for _ in range(runs):
        d = DriftEstimator()
        t = time.process_time()
        for i in range(0, f16.size - 320 + 1, 320):
            d.feed(f16[i : i + 320], m16[i : i + 320])
        best = min(best, time.process_time() - t)
    out["drift_duty_ms_per_s"] = best / RECHECK_S * 1000
    out["drift_duty_sound_share"] = float(np.mean(np.abs(duty) > 1e-3))
    out["drift_duty_sure"] = float(d.sure)
    out["drift_duty_estimate_ppm"] = math.nan if d.estimate is None else d.estimate
    return out


def path_cpu_figures(runs: int = 3) -> dict[str, float]:
    """The whole aec path's CPU (bench/echo.py's: the far-end tap written at 48 kHz 60 ms
    ahead, the canceller with its aligner, VAD on its output), with FarEnd.compensate off and
    on, interleaved, process time, lowest of ``runs``: while speaking (20 s of speech from a
    fresh canceller: the estimator runs ~12 s of it), and averaged over a duty cycle (10 min,
    an answer of 2-8 s every 30-60 s, the writer's silence in between, as the continuous
    stream of echo.mode aec writes it). With compensation the estimate at the end."""
    import soxr
    import webrtcvad

    from agentd.audio.echo import EchoCanceller, EchoSetup
    from agentd.audio.frame import AudioFrame
    from bench import echo
    from tests import corpus, voice_eval
    from tests.corpus import RATE

    card = 48000
    scenes = {"speaking": echo._speech(20, seed=2), "duty": _duty_cycle()}
    prepared = {}
    for name, play in scenes.items():
        mic = voice_eval.echo_at_mic(play)
        far48 = np.frombuffer(
            bytes(AudioFrame.from_floats(soxr.resample(play, RATE, card), card).audio), "<i2"
        )
        prepared[name] = (corpus.frames(mic, 20), far48, play.size / RATE)

    def playing(name: str, comp: bool) -> tuple[float, EchoCanceller]:
        frames, far48, _ = prepared[name]
        ahead = card * voice_eval.AHEAD_MS // 1000
        vad = webrtcvad.Vad(2)
        ec = EchoCanceller(EchoSetup(aec=True))
        ec.far.compensate = comp
        ec.far.written(far48[:ahead], card, 0.0)
        t = time.process_time()
        for f in frames:
            i = round(f.timestamp * card) + ahead
            chunk = far48[i : i + card // 50]
            ec.far.written(chunk if chunk.size else np.zeros(card // 50, np.int16), card, i / card)
            vad.is_speech(ec.process(f).audio, RATE)
        return time.process_time() - t, ec

    got: dict[str, list[float]] = {}
    last: dict[str, EchoCanceller] = {}
    for _ in range(runs):
        for name in prepared:
            for comp in (False, True):
                cpu, ec = playing(name, comp)
                tag = f"path_{name}_{'comp' if comp else 'plain'}_ms_per_s"
                got.setdefault(tag, []).append(cpu / prepared[name][2] * 1000)
                last[name] = ec
    out = {k: min(v) for k, v in got.items()}
    out.update({f"{k}_median": float(np.median(v)) for k, v in got.items()})
    d = last["duty"].far.drift
    out["path_duty_estimate_ppm"] = math.nan if d.estimate is None else d.estimate
    out["path_duty_applied_ppm"] = last["duty"].far.ppm
    out["path_duty_windows"] = d.windows
    return out


def barge_figures() -> dict[str, float]:
    """bench/echo.py's barge_figures (the same seeds and cases), with the trials missed
    (no barge-in at all) counted, and p95 by nearest rank over every trial, a miss counted
    as never (np.percentile gave nan as soon as one was missed)."""
    from bench import echo
    from tests import voice_eval

    out = echo.barge_figures()
    scores = [voice_eval.score_barge_in(seed, 28) for seed in (3, 7, 11)]
    for ser in (-5.0, -10.0):
        d = sorted(x for sc in scores for x in sc.delays_ms[ser])
        tag = f"m{-ser:g}"
        out[f"barge_missed_ser_{tag}"] = float(sum(math.isinf(x) for x in d))
        out[f"barge_p95_ms_ser_{tag}"] = d[math.ceil(0.95 * len(d)) - 1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", help=f"one of {', '.join(CONFIGS)}, or a JSON object")
    ap.add_argument("parts", nargs="*", default=["erle", "dt", "barge", "cpu"])
    ap.add_argument("--site", help="another build's directory, first on sys.path")
    ap.add_argument("--stock", action="store_true", help="no config (as the released wheel)")
    ap.add_argument("--extra", default="{}", help="JSON fields added to the config")
    ap.add_argument("--drift", type=float, default=100.0, help="ppm, for erle and dt (the rig's)")
    ap.add_argument("--comp", type=float, help="ppm: the far end resampled by the drift")
    ap.add_argument(
        "--online", action="store_true", help="the far end resampled by FarEnd's own estimate"
    )
    a = ap.parse_args()
    if a.site and not a.stock:
        sys.path.insert(0, a.site)
    import pywebrtc_audio

    cfg = dict(CONFIGS[a.config] if a.config in CONFIGS else json.loads(a.config))
    cfg.update(json.loads(a.extra))
    native = pywebrtc_audio.EchoCanceller
    if not a.stock:
        aec3 = {k: v for k, v in cfg.items() if k != "stream_delay_ms"}
        delay = int(cfg.get("stream_delay_ms", 0))  # AEC3's external delay (ms, 4 ms steps)

        def made(*args: Any, **kw: Any) -> Any:
            return native(*args, stream_delay_ms=delay, config=aec3, **kw)

        pywebrtc_audio.EchoCanceller = made
    elif cfg:
        raise SystemExit("the stock wheel takes no config")

    if a.comp is not None:
        compensate(a.comp)
    if a.online:
        online()
    from bench import echo

    out: dict[str, Any] = {"config": a.config, "lib": pywebrtc_audio.__file__, "drift": a.drift}
    out["comp"] = a.comp
    out["online"] = a.online
    out.update(cfg)
    for part in a.parts:
        t = time.process_time()
        if part == "erle":
            out.update(echo.erle_figures(drift_ppm=a.drift))
        elif part == "dt":
            out.update(echo.double_talk_figures(drift_ppm=a.drift))
        elif part == "barge":
            out.update(barge_figures())
        elif part == "cpu":
            out.update(echo.cpu_figures(runs=4))
        elif part == "estimate":
            out.update(estimate_figures())
        elif part == "drift_cpu":
            out.update(drift_cpu_figures())
        elif part == "path_cpu":
            out.update(path_cpu_figures())
        out[f"bench_cpu_s_{part}"] = time.process_time() - t
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
