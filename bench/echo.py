"""Full duplex (issue 22): the echo canceller and voice barge-in on the echo path rig.

Component path (agentd/sim/echo_path.py's loudspeaker, RT60 0.3 s room, 100 ppm drift and
40 dB SNR noise applied to espeak-ng speech, then agentd/audio/echo.py exactly as the daemon
runs it, the far end handed over as Playback's writer hands it): ERLE (median, p10, within
0.5 s of playback onset, with and without drift), double-talk attenuation and correlation,
barge-in latency at SER -5/-10 dB over ≥ 40 trials each and false barge-ins over ≥ 50
echo-only answers, CPU per audio-second of cancel + VAD against the half-duplex path (VAD
only), RSS delta, and noise suppression's speech-to-noise gain.

End to end (``--e2e [ANSWERS [TRIALS]]``): the real daemon, the simulator and the PulseAudio
room (plain, and through the rig) answering questions with nobody talking over them, at 1×
and 5× delivery (ANSWERS per case, four cases: self-interruptions counted); then, through
the rig, TRIALS voice barge-ins at SER -5 and -10 dB (latency from the talker's speech
reaching the microphone's sink, after the rig's own output buffer, to playback stopped with
cancel + truncate sent), and one
more answer after them that must play whole.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from agentd.audio.echo import EchoCanceller, EchoSetup
from agentd.audio.frame import AudioFrame
from tests import corpus, voice_eval
from tests.corpus import RATE
from tests.echo_scenes import Barge

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


def vad_figures() -> dict[str, float]:
    """webrtcvad (mode 2, the daemon's) against pymicro-vad (a small model VAD, when it is
    installed) on the cancelled signal, per 10 ms frame: the share of the near end's voiced
    frames found during double talk at SER -5 and -10 dB, the share of echo-only frames
    called speech, and CPU ms per audio-second."""
    import webrtcvad

    try:
        from pymicro_vad import MicroVad
    except ImportError:
        MicroVad = None
    play = _speech(24.0, seed=9)
    echo = voice_eval.echo_at_mic(play)
    ec = EchoCanceller(EchoSetup(aec=True))
    _cancelled(echo[: RATE * 8], play[: RATE * 8], ec)  # converged on this room first
    user = corpus.utterance(corpus.PHRASES[4])
    voiced_echo = echo[np.abs(echo) > 1e-3]
    level = float(np.sqrt(np.mean(voiced_echo**2))) / float(
        np.sqrt(np.mean(user[np.abs(user) > 1e-3] ** 2))
    )
    clips: list[tuple[float, np.ndarray, np.ndarray]] = []  # ser, cancelled, clean near end
    for ser in (-5.0, -10.0, None):
        u = np.zeros_like(echo)
        if ser is not None:
            for onset in range(RATE, u.size - user.size, user.size + RATE):
                u[onset : onset + user.size] = user * level * 10 ** (ser / 20)
        y = _cancelled(echo + u, play, ec)[: u.size]
        clips.append((ser if ser is not None else 0.0, y, u))
    vads: dict[str, Any] = {"webrtcvad": webrtcvad.Vad(2)}
    if MicroVad is not None:
        vads["pymicro_vad"] = MicroVad()
    out: dict[str, float] = {}
    n = RATE // 100
    for name, vad in vads.items():
        cpu = 0.0
        for ser, y, u in clips:
            pcm = np.frombuffer(bytes(AudioFrame.from_floats(y, RATE).audio), "<i2")
            t = time.process_time()
            if name == "webrtcvad":
                said = [
                    vad.is_speech(pcm[i : i + n].tobytes(), RATE) for i in range(0, pcm.size - n, n)
                ]
            else:
                vad.reset()
                said = [
                    vad.process_10ms(pcm[i : i + n].tobytes()) >= 0.5
                    for i in range(0, pcm.size - n, n)
                ]
            cpu += time.process_time() - t
            peak = _db(u[np.abs(u) > 1e-3]) if ser else 0.0
            user_on = [
                ser != 0.0 and _db(u[i : i + n]) > peak - 10 for i in range(0, pcm.size - n, n)
            ]
            echo_on = [
                _db(echo[i : i + n]) > -50 and not u[i : i + n].any()
                for i in range(0, pcm.size - n, n)
            ]
            if ser:
                hits = [s for s, on in zip(said, user_on, strict=True) if on]
                out[f"vad_{name}_found_ser_m{-ser:g}"] = float(np.mean(hits))
            else:
                fa = [s for s, on in zip(said, echo_on, strict=True) if on]
                out[f"vad_{name}_false_echo_only"] = float(np.mean(fa))
        out[f"vad_{name}_cpu_ms_per_s"] = cpu / (sum(y.size for _, y, _ in clips) / RATE) * 1000
    return out


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
    v = vad_figures()
    out.update(v)
    for name in ("webrtcvad", "pymicro_vad"):
        if f"vad_{name}_cpu_ms_per_s" in v:
            print(
                f"VAD on the cancelled signal, {name}: finds "
                f"{v[f'vad_{name}_found_ser_m5']:.0%} / {v[f'vad_{name}_found_ser_m10']:.0%} of the "
                f"near end's voiced 10 ms frames at SER -5 / -10 dB, calls "
                f"{v[f'vad_{name}_false_echo_only']:.0%} of echo-only frames speech, "
                f"{v[f'vad_{name}_cpu_ms_per_s']:.2f} ms CPU per audio-second"
            )
    n = ns_figures()
    out.update(n)
    print(
        f"noise suppression (level 3): speech-to-noise gain {n['ns_snr_gain_db']:.1f} dB, "
        f"onset loss {n['ns_onset_loss_db']:.1f} dB"
    )
    return out


async def _e2e_cases(answers: int, trials: int) -> dict[str, float]:
    import tempfile

    import pytest

    from agentd.sim.echo_path import EchoRig
    from tests import echo_scenes, rigs
    from tests.conftest import running_daemon

    out: dict[str, float] = {}
    room = rigs.PulseRoom(rigs.PULSE_SOCKET.parent).start()
    try:
        for rig_on in (False, True):
            rig = EchoRig(room.socket, room.env).start() if rig_on else None
            name = "rig" if rig_on else "plain"
            try:
                for pace in (1.0, 5.0) if answers else ():
                    tmp = Path(tempfile.mkdtemp(prefix="agentd-echo-e2e-"))
                    with pytest.MonkeyPatch.context() as mp:
                        over = echo_scenes.config(rig=rig_on)
                        async with running_daemon(tmp, mp, over) as h:
                            talk = echo_scenes.Talker(room, rig, tmp)
                            got = await echo_scenes.echo_only_answers(h, talk, answers, pace)
                    cut = got.asked - got.whole
                    out[f"e2e_{name}_{pace:g}x_answers"] = got.asked
                    out[f"e2e_{name}_{pace:g}x_cut"] = cut
                    print(
                        f"  {name} room, {pace:g}× delivery: {cut} of {got.asked} echo-only "
                        f"answers cut ({got.interrupts} barge-ins, {got.truncates} truncates; "
                        f"short by {got.short_ms} ms)",
                        flush=True,
                    )
                if rig_on and trials:
                    tmp = Path(tempfile.mkdtemp(prefix="agentd-echo-e2e-"))
                    with pytest.MonkeyPatch.context() as mp:
                        async with running_daemon(tmp, mp, echo_scenes.config(rig=True)) as h:
                            talk = echo_scenes.Talker(room, rig, tmp)
                            # the canceller learns on a first answer (the button works then)
                            await echo_scenes.answer(h, talk)
                            for ser in (-5.0, -10.0):
                                res = []
                                for k in range(trials):
                                    phrase = echo_scenes.PHRASES[k % len(echo_scenes.PHRASES)]
                                    res.append(await echo_scenes.barge_in(h, talk, ser, phrase))
                                _barge_report(out, ser, res)
                            h.sim.pace = 1.0
                            after = await echo_scenes.echo_only_answers(h, talk, 1, 1.0)
                            out["e2e_after_barge_ins_whole"] = after.whole
                            print(
                                f"  the answer after {2 * trials} barge-ins: "
                                f"{'whole' if after.whole else 'cut'}",
                                flush=True,
                            )
            finally:
                if rig is not None:
                    rig.stop()
    finally:
        room.stop()
    return out


def _barge_report(out: dict[str, float], ser: float, res: list[Barge]) -> None:
    cut = sum(r.self_cut for r in res)  # no trial: the answer cut itself first
    res = [r for r in res if not r.self_cut]
    lat = [r.latency_ms for r in res if r.latency_ms is not None]
    missed = len(res) - len(lat)
    out[f"e2e_barge_self_cut_ser_m{-ser:g}"] = cut
    errs = [
        abs(r.truncate_ms - r.heard_ms)
        for r in res
        if r.truncate_ms is not None and r.heard_ms is not None
    ]
    tag = f"m{-ser:g}"
    p95 = float(np.percentile(lat, 95)) if len(lat) == len(res) and lat else float("inf")
    out[f"e2e_barge_p95_ms_ser_{tag}"] = p95
    out[f"e2e_barge_missed_ser_{tag}"] = missed
    target = 500 if ser > -7 else 1000
    print(
        f"  voice barge-in at SER {ser:g} dB: p95 {p95:.0f} ms (≤ {target}), median "
        f"{np.median(lat) if lat else float('nan'):.0f} ms, {missed} of {len(res)} missed "
        f"(counted as never), {cut} answers cut themselves before the talker; cancel sent "
        f"{sum(r.cancel_sent for r in res)}/{len(lat)}; truncate vs Playback's count: max "
        f"{max(errs) if errs else float('nan'):.0f} ms; (the rig's own output buffer, not "
        f"counted: median {np.median([r.rig_ms for r in res]) if res else float('nan'):.0f} ms)",
        flush=True,
    )


def e2e(answers: int = 13, trials: int = 40) -> dict[str, float]:
    """The real daemon end to end (see the module's docstring)."""
    import asyncio

    t = time.monotonic()
    print("end to end, the real daemon (issue 22):", flush=True)
    out = asyncio.run(_e2e_cases(answers, trials))
    cases = [k for k in out if k.endswith("_answers")]
    total = sum(out[k] for k in cases)
    cut = sum(out[k.replace("_answers", "_cut")] for k in cases)
    if cases:
        print(f"self-interruptions: {cut:.0f} of {total:.0f} echo-only answers (0)", flush=True)
    print(f"({time.monotonic() - t:.0f} s)", flush=True)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--e2e"]:
        e2e(*(int(a) for a in sys.argv[2:4]))
    else:
        main()
