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
reaching the microphone's sink, after the rig's own output buffer, to the answer's last
sample out of the speaker, cancel + truncate sent before; with where the time went), and one
more answer after them that must play whole. ``--features F.npy`` keeps every frame the
barge-in policy judged (bench/barge_replay.py replays them); with ``--shadow`` the daemon is
never told to barge in by voice, so every answer and trial is kept whole for the replay (the
run's own figures then mean nothing). ``--aec3-inputs PREFIX`` keeps what every canceller's
AEC3 was handed (PREFIX_K.npz): replayed, it gives back the run's AEC3 output sample for
sample, and variants can be tried on it.

``--slips``: echo-only answers cut when the echo path moves a few samples mid-answer
(component path; :func:`slip_figures`).

``--field-trials``: AEC3's suppressor settings by webrtc field trial (the only way left to
reach them): each trial in a process of its own, whether AEC3's output changes at all, and
double talk. ``--bindings``, ``--double-talk-cause``: see their functions.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agentd  # noqa: F401, I001  (first: its BLAS thread setting must precede numpy)
import numpy as np

from agentd.audio.echo import EchoCanceller, EchoSetup, FarEnd
from agentd.audio.frame import AudioFrame
from tests import corpus, voice_eval
from tests.corpus import RATE
from tests.echo_scenes import Barge

BLOCK = RATE // 10  # ERLE is measured per 100 ms
# e2e: far-end sound the canceller has heard before the barge-in trials (echo-only answers)
WARMUP_S = 30.0
PIPE_MS = 60  # e2e: from the frame that decides a barge-in to the last sample out, about


def _speech(seconds: float, seed: int = 5) -> np.ndarray:
    return voice_eval._playback(np.random.default_rng(seed), seconds)


def _db(x: np.ndarray) -> float:
    return 10 * float(np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-12))


def _cancelled(mic: np.ndarray, play: np.ndarray, ec: EchoCanceller | None = None) -> np.ndarray:
    return np.concatenate([f.floats() for f in voice_eval.cancel(mic, play, 20, ec)])


def erle_figures(
    seconds: float = 30, drift_ppm: float = 100.0, lib: Any = None
) -> dict[str, float]:
    """ERLE on far-end-only speech: per 100 ms block where the echo is above the noise."""
    play = np.concatenate([np.zeros(RATE // 2, np.float32), _speech(seconds)])
    echo = voice_eval.echo_at_mic(play, drift_ppm=drift_ppm)
    out = _cancelled(echo, play, EchoCanceller(EchoSetup(aec=True), lib=lib))
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


def double_talk_figures(
    drift_ppm: float = 100.0,
    phrases: int = 8,
    lib: Any = None,
    far: FarEnd | None = None,
    **path: float,
) -> dict[str, float]:
    """Near-end speech kept while the echo plays, over ``phrases`` phrases of the corpus
    (one every 4 s over continuous far-end speech; one phrase alone swung the figures by
    5 dB and 0.2 from phrase to phrase): per phrase, its attenuation at SER -10 dB (the
    cancelled output against the clean near end over its voiced 100 ms blocks) and the
    correlation of the cancelled capture with the clean near end at SER 0 dB over the
    phrase; the medians over phrases are the figures. Both are taken at the lag where the
    output matches the near end best (the canceller delays its output a little), one lag
    for all phrases. The near end does not drift (the talker is at the microphone's clock).
    ``path``: the rig's echo path otherwise (EchoPath's drive, rt60, noise_rms); ``far``: the
    canceller's far end (one that compensates the drift: FarEnd.compensate)."""
    from agentd.sim.echo_path import EchoPath

    gap = 4 * RATE
    onset0 = 2 * RATE
    play = _speech((onset0 + phrases * gap) / RATE + 1, seed=9)
    echo = EchoPath(drift_ppm=drift_ppm, seed=1, **path).process(play)
    echo = np.pad(echo, (0, max(0, play.size - echo.size)))[: play.size]
    ec = EchoCanceller(EchoSetup(aec=True), far, lib=lib)
    _cancelled(echo[: 8 * RATE], play[: 8 * RATE], ec)  # converged on this room first
    voiced_echo = echo[np.abs(echo) > 1e-3]
    echo_rms = float(np.sqrt(np.mean(voiced_echo**2)))
    users = [corpus.utterance(corpus.PHRASES[i % len(corpus.PHRASES)]) for i in range(phrases)]
    out: dict[str, float] = {}
    for ser in (-10.0, 0.0):
        u = np.zeros_like(echo)
        spans = []
        for i, user in enumerate(users):
            at = onset0 + i * gap
            k = min(user.size, gap - RATE // 2)
            level = echo_rms / float(np.sqrt(np.mean(user[np.abs(user) > 1e-3] ** 2)))
            u[at : at + k] = user[:k] * level * 10 ** (ser / 20)
            spans.append((at, at + k))
        y = _cancelled(echo + u, play, ec)[: u.size]
        # the canceller's output lags its input (AEC3's 64-sample blocks: 8 ms): one lag,
        # where the output matches the near end best over all phrases
        ui = np.concatenate([u[a:b] for a, b in spans])
        corrs = [
            float(np.corrcoef(np.concatenate([y[a + lag : b + lag] for a, b in spans]), ui)[0, 1])
            for lag in range(0, RATE // 40)
        ]
        lag = int(np.argmax(corrs))
        ya = np.concatenate([y[lag:], np.zeros(lag, np.float32)])
        att, corr = [], []
        for a, b in spans:
            loud = _db(u[a:b]) - 6
            blocks = [
                (i, i + BLOCK) for i in range(a, b - BLOCK, BLOCK) if _db(u[i : i + BLOCK]) > loud
            ]
            att.append(float(np.median([_db(u[c:d]) - _db(ya[c:d]) for c, d in blocks])))
            corr.append(float(np.corrcoef(ya[a:b], u[a:b])[0, 1]))
        out["double_talk_lag_ms"] = lag / RATE * 1000
        tag = "m10" if ser < 0 else "0"
        out[f"attenuation_db_ser_{tag}"] = float(np.median(att))
        out[f"correlation_ser_{tag}"] = float(np.median(corr))
        out[f"attenuation_db_ser_{tag}_worst"] = float(np.max(att))
        out[f"correlation_ser_{tag}_worst"] = float(np.min(corr))
    return out


WARM_PASSES = 2  # the aec path's passes over the signal before the one timed (40 s)
PASSES = 5  # ... at most, the one timed with them (the drift estimate is made first)


def cpu_figures(seconds: float = 20, runs: int = 6) -> dict[str, float]:
    """CPU ms per audio-second (process CPU time; the machine is shared, so each figure is
    measured ``runs`` times, interleaved, and the lowest and the median are kept): while the far end plays, the daemon's
    whole aec path (the far-end tap resampling the card's 48 kHz as Playback hands it, the
    canceller with its aligner, VAD on its output and, as voice barge-in asks, on AEC3's linear
    output); AEC3 alone on the same signals (the
    library's floor) and timed inside the path; the far-end tap alone (written at 48 kHz, taken per frame) and the
    aligner alone on the same frames (where the rest goes); the same path while nothing
    plays (the canceller bypassed); VAD alone (half duplex)."""
    import types

    import soxr
    import webrtcvad

    from agentd.audio.echo import IDLE_AEC_S, Aligner, FarEnd, aec3, library

    play = _speech(seconds, seed=2)
    mic = voice_eval.echo_at_mic(play)
    frames = corpus.frames(mic, 20)
    # the aec path's passes (up to PASSES, the signal played on in a loop) hear one room, its
    # drift run on: echoes of each pass heard apart (tiled) step the path back by the drift
    # (2 ms in 20 s) at every pass's start, which AEC3's linear filter loses for ~0.3 s
    # (removal ~0 dB) and the pass was timed re-learning it
    looped = voice_eval.echo_at_mic(np.tile(play, PASSES))
    passes = [corpus.frames(looped[k * play.size :][: play.size], 20) for k in range(PASSES)]
    card = 48000
    far48 = np.frombuffer(
        bytes(AudioFrame.from_floats(soxr.resample(play, RATE, card), card).audio), "<i2"
    )
    far_looped = np.tile(far48, PASSES + 1)  # (the writer's AHEAD_MS into the next pass)
    ahead = card * voice_eval.AHEAD_MS // 1000
    near = np.frombuffer(bytes(AudioFrame.from_floats(mic, RATE).audio), "<i2")
    far = np.frombuffer(bytes(AudioFrame.from_floats(play, RATE).audio), "<i2")
    noise = corpus.frames(voice_eval.echo_at_mic(np.zeros_like(play)), 20)  # the room alone

    def half() -> float:
        vad = webrtcvad.Vad(2)
        t = time.process_time()
        for f in frames:
            vad.is_speech(f.audio, RATE)
        return time.process_time() - t

    def playing(lib: Any = None, drift: bool = False, timed: Any = None) -> float:
        """The path on the signal, timed once the far end's drift estimate (FarEnd.compensate:
        the tuned config) is made and stopped, as in a daemon that has played a while;
        ``drift``: timed while the estimator runs (its first ~10-20 s of far-end sound, and
        again every 10 min; restarted when it becomes sure within the pass, so it runs for
        the whole of it); ``timed()`` is called as the timed pass starts."""
        vad, linear_vad = webrtcvad.Vad(2), webrtcvad.Vad(2)
        ec = EchoCanceller(EchoSetup(aec=True), lib=lib)
        ec.far.written(far48[:ahead], card, 0.0)

        def sure_now() -> bool:
            return not ec.far.compensate or ec.far.drift.sure

        def once(k: int) -> float:  # the signal, k·seconds on
            # what the playback thread writes and the capture hands over, made before the
            # clock starts: both happen in the half-duplex path too, not timed there
            steps = []
            for f in passes[k]:  # the writer stays AHEAD_MS ahead of the speaker, 20 ms at a time
                i = round((k * seconds + f.timestamp) * card) + ahead
                g = AudioFrame(f.audio, RATE, timestamp=k * seconds + f.timestamp)
                steps.append((far_looped[i : i + card // 50], i / card, g))
            t = time.process_time()
            for played, at, g in steps:
                ec.far.written(played, card, at)
                vad.is_speech(ec.process(g).audio, RATE)
                if (linear := ec.linear()) is not None:  # (agentd's build only)
                    linear_vad.is_speech(linear.tobytes(), RATE)
                if drift and not ec.far.drift.running:  # (sure within the pass: runs on)
                    ec.far.drift.restart()
            return time.process_time() - t

        # (the same pass timed whenever the estimate is made: AEC3's and the answer's state
        # differ from pass to pass, ~0.3 ms per audio-second)
        k = 0
        while not drift and k < PASSES - 1 and (k < WARM_PASSES or not sure_now()):
            once(k)
            k += 1
        sure.append(drift or sure_now())
        if timed is not None:
            timed()
        return once(k)

    sure: list[bool] = []

    def in_path() -> float:
        """AEC3's own calls timed inside the whole path: between them the Python work
        evicts its state from the cache, and it costs more than alone."""
        spent = [0.0]

        class Timed:  # (takes the config as the native one does: the daemon's AEC3)
            def __init__(self, *args: Any, **kw: Any) -> None:
                self.aec = library().EchoCanceller(*args, **kw)

            def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
                t = time.process_time()
                out: np.ndarray = self.aec.process(near, far)
                spent[0] += time.process_time() - t
                return out

            def linear(self) -> np.ndarray:
                t = time.process_time()
                out: np.ndarray = self.aec.linear()
                spent[0] += time.process_time() - t
                return out

        playing(types.SimpleNamespace(EchoCanceller=Timed), timed=lambda: spent.__setitem__(0, 0.0))
        return spent[0]

    def native() -> float:
        aec = aec3(library())
        n = RATE // 50
        t = time.process_time()
        for i in range(0, near.size - n + 1, n):
            aec.process(near[i : i + n], far[i : i + n])
        return time.process_time() - t

    def tap() -> float:
        far_end = FarEnd()
        far_end.written(far48[:ahead], card, 0.0)
        t = time.process_time()
        for f in frames:
            i = round(f.timestamp * card) + ahead
            far_end.written(far48[i : i + card // 50], card, i / card)
            far_end.take(f.samples, f.timestamp)
        return time.process_time() - t

    pairs = [(f.array(), far[round(f.timestamp * RATE) :][: f.samples]) for f in frames]

    def aligner() -> float:
        a = Aligner(FarEnd())
        t = time.process_time()
        for n, r in pairs:
            a.block(n, r)
        return time.process_time() - t

    def idle() -> float:
        vad = webrtcvad.Vad(2)
        ec = EchoCanceller(EchoSetup(aec=True))
        ec.far.written(far48[: card // 2], card, 0.0)  # an answer's last half second
        for f in noise[: round((IDLE_AEC_S + 1) * 50)]:  # then its echo's tail: cancelled
            ec.process(f)
        t = time.process_time()
        for f in noise:
            vad.is_speech(ec.process(f).audio, RATE)
        assert ec.bypassed >= len(noise), "the canceller was not bypassed"
        return time.process_time() - t

    out: dict[str, float] = {}
    cases = {
        "aec": playing,
        "aec_drift": lambda: playing(drift=True),
        "native": native,
        "native_in_path": in_path,
        "tap": tap,
        "aligner": aligner,
        "idle": idle,
        "half": half,
    }
    got: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):  # interleaved: a burst of load elsewhere hits every case alike
        for name, fn in cases.items():
            got[name].append(fn() / seconds * 1000)
    for name, ms in got.items():
        out[f"cpu_ms_per_s_{name}"] = min(ms)
        out[f"cpu_ms_per_s_{name}_median"] = float(np.median(ms))
    out["cpu_ratio"] = out["cpu_ms_per_s_aec"] / max(out["cpu_ms_per_s_half"], 1e-9)
    assert all(sure), "the drift estimate was not made on the first pass"
    return out


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


def ns_figures(phrases: int = 8) -> dict[str, float]:
    """Local noise suppression (level 3 = 18 dB) on the corpus's phrases in the rig's noise
    raised to 15 dB SNR, one suppressor through all of them with 2 s of noise before each,
    as the daemon runs it (created once, never reset per turn): speech-to-noise gain, and
    onset loss per phrase (the suppression of its first 100 ms beyond that of the whole
    phrase), median and worst. The output is compared at the suppressor's own delay (found
    by cross-correlation: 6 ms); compared unaligned, the first 6 ms of speech were missing
    from the onset window and counted as loss."""
    rng = np.random.default_rng(4)
    gap = np.zeros(2 * RATE, np.float32)
    parts, spans = [gap], []
    at = gap.size
    for text in corpus.PHRASES[:phrases]:
        sp = corpus.utterance(text) * 0.5
        spans.append((at, at + sp.size))
        parts += [sp, gap]
        at += sp.size + gap.size
    clean = np.concatenate(parts)
    level = np.sqrt(np.mean(np.concatenate([clean[a:b] for a, b in spans]) ** 2))
    noise = rng.standard_normal(clean.size) * 10 ** (-15 / 20) * level
    mic = (clean + noise).astype(np.float32)
    ec = EchoCanceller(EchoSetup(noise_suppression=3))
    y = np.concatenate([ec.process(f).floats() for f in corpus.frames(mic, 20)])
    c0 = spans[0][0]
    lag = max(
        range(0, RATE // 50),
        key=lambda d: float(np.dot(y[c0 + d : c0 + d + RATE], clean[c0 : c0 + RATE])),
    )
    y = np.concatenate([y[lag:], np.zeros(clean.size - y.size + lag, np.float32)])
    speech = np.zeros(clean.size, bool)
    for a, b in spans:
        speech[a:b] = True
    quiet = ~speech
    quiet[:RATE] = False  # its first second: the noise estimate forming
    gain = (_db(y[speech]) - _db(y[quiet])) - (_db(mic[speech]) - _db(mic[quiet]))
    loss = []
    for a, b in spans:
        on = slice(a, a + RATE // 10)
        loss.append((_db(mic[on]) - _db(y[on])) - (_db(mic[a:b]) - _db(y[a:b])))
    return {
        "ns_snr_gain_db": gain,
        "ns_onset_loss_db": float(np.median(loss)),
        "ns_onset_loss_worst_db": float(np.max(loss)),
        "ns_delay_ms": lag / RATE * 1000,
    }


def barge_figures(seeds: tuple[int, ...] = (3, 7, 11), cases: int = 28) -> dict[str, float]:
    """Component path: false barge-ins on echo-only answers (incl. a fresh canceller's) and
    barge-in latency p95 at SER -5 and -10 dB (once the canceller has heard WARM_S:
    voice_eval.score_barge_in)."""
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


def slip_figures(
    slips: tuple[int, ...] = (0, 1, 2, 3, 4, 8, 16, 48, 80, 160, 320, 640),
    answers: int = 20,
    seeds: tuple[int, ...] = (3, 7, 11),
    talked: tuple[int, ...] = (160, 320),
) -> dict[str, float]:
    """Component path: echo-only answers that cut themselves when the echo path moves by a
    few samples in a pause mid-answer (voice_eval.score_slips), per size of the move, over
    ``answers`` answers for each of ``seeds`` (the echo path's room and noise). Why: the
    "onset leak" of the end-to-end runs (a settled answer cut at a phrase's onset, AEC3's
    linear filter taking ~nothing off): a fraction of a millisecond of such a move is enough
    to make it, and a sound server between the daemon and the card (PulseAudio, PipeWire)
    moves the echo that much, or 7-18 ms, when the daemon is held up (bench/stall_slips.py).
    SlipWatch reaches 27 ms (SLIP_MAX less SLIP_EDGE); 640 samples (40 ms) is PathWatch's.
    Then the same answers with a user talking over each at -5 dB 0.2-1.2 s after its slip
    (voice_eval.score_slip_barge), for ``talked`` slips: how soon voice barge-in hears them
    while the canceller re-fits."""
    out: dict[str, float] = {}
    total = answers * len(seeds)
    for d in slips:
        cut, after = 0, []
        for seed in seeds:
            c, a = voice_eval.score_slips(seed, answers, d)
            cut, after = cut + c, after + a
        out[f"cut_of_{total}_slip_{d}"] = float(cut)
        print(
            f"the echo path moving {d} samples ({d / RATE * 1000:.2f} ms) in a pause: {cut} of "
            f"{total} echo-only answers cut"
            + (f", {np.median(after):.2f} s after it (median)" if after else ""),
            flush=True,
        )
    for d in talked:
        delays: list[float] = []
        early = 0
        for seed in seeds:
            t, e = voice_eval.score_slip_barge(seed, answers, d)
            delays, early = delays + t, early + e
        x = np.array(delays)
        p95 = float(np.percentile(x, 95, method="higher"))  # (inf: missed)
        out[f"talked_p95_ms_slip_{d}"] = p95
        print(
            f"a user at -5 dB 0.2-1.2 s after a slip of {d} samples: {x.size} trials ({early} "
            f"answers cut before they spoke), heard in a median {np.median(x):.0f} ms, p95 "
            f"{p95:.0f} ms, {int((x > 500).sum())} after 500 ms, "
            f"{int(np.isinf(x).sum())} not at all",
            flush=True,
        )
    return out


def main() -> dict[str, float]:
    out: dict[str, float] = {}
    print(f"AEC3: {_build(EchoCanceller(EchoSetup(aec=True)))}", flush=True)
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
    d0 = double_talk_figures(drift_ppm=0.0)
    out["attenuation_db_ser_m10_no_drift"] = d0["attenuation_db_ser_m10"]
    out["correlation_ser_0_no_drift"] = d0["correlation_ser_0"]
    print(
        f"double talk, median (worst) of 8 phrases: near end attenuated "
        f"{d['attenuation_db_ser_m10']:.1f} ({d['attenuation_db_ser_m10_worst']:.1f}) dB at SER "
        f"-10 dB (≤ 10), correlation with the clean near end {d['correlation_ser_0']:.2f} "
        f"({d['correlation_ser_0_worst']:.2f}) at 0 dB (≥ 0.8), at the canceller's "
        f"{d['double_talk_lag_ms']:.0f} ms delay; without the 100 ppm drift "
        f"{d0['attenuation_db_ser_m10']:.1f} dB / {d0['correlation_ser_0']:.2f}"
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
        f"CPU per audio-second (process CPU time, min / median of 6 interleaved runs): while "
        f"the far end plays (far-end tap at 48 kHz + canceller + aligner + VAD) "
        f"{c['cpu_ms_per_s_aec']:.2f} / {c['cpu_ms_per_s_aec_median']:.2f} ms (≤ 8; while the "
        f"drift estimate runs {c['cpu_ms_per_s_aec_drift']:.2f} / "
        f"{c['cpu_ms_per_s_aec_drift_median']:.2f}), of which "
        f"AEC3 alone {c['cpu_ms_per_s_native']:.2f} / {c['cpu_ms_per_s_native_median']:.2f} ms "
        f"(timed inside the path {c['cpu_ms_per_s_native_in_path']:.2f} / "
        f"{c['cpu_ms_per_s_native_in_path_median']:.2f}), "
        f"the far-end tap {c['cpu_ms_per_s_tap']:.2f} / {c['cpu_ms_per_s_tap_median']:.2f}, the "
        f"aligner {c['cpu_ms_per_s_aligner']:.2f} / {c['cpu_ms_per_s_aligner_median']:.2f}; "
        f"while nothing plays (canceller bypassed) {c['cpu_ms_per_s_idle']:.2f} / "
        f"{c['cpu_ms_per_s_idle_median']:.2f} ms; VAD alone (half duplex) "
        f"{c['cpu_ms_per_s_half']:.2f} ms ({c['cpu_ratio']:.0f}× while playing)"
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
        f"noise suppression (level 3), 8 phrases at 15 dB SNR: speech-to-noise gain "
        f"{n['ns_snr_gain_db']:.1f} dB, onset loss median {n['ns_onset_loss_db']:.1f} dB, "
        f"worst {n['ns_onset_loss_worst_db']:.1f} dB (≈ 0; output compared at the "
        f"suppressor's {n['ns_delay_ms']:.0f} ms delay)"
    )
    print("the AEC3 bindings, each in a process of its own (RSS, W^X lock):")
    for name, m in bindings().items():
        out.update({f"{name}_{k}": v for k, v in m.items()})
    return out


def _own_process(*args: str) -> dict[str, float]:
    """This script run again with ``args`` in a process of its own (a native library's
    global state, a clean RSS): the figures it prints as JSON on its last line."""
    import json
    import subprocess

    r = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    out: dict[str, float] = json.loads(r.stdout.splitlines()[-1])
    return out


def double_talk_cause() -> dict[str, float]:
    """Double talk with each of the rig's flaws taken away in turn, then all of them: which
    one makes AEC3's suppressor take the near end (none alone, it turned out)."""
    cases: dict[str, dict[str, float]] = {
        "the rig": {},
        "no clock drift": {"drift_ppm": 0.0},
        "a linear speaker": {"drive": 0.05},
        "RT60 0.1 s": {"rt60": 0.1},
        "no noise": {"noise_rms": 0.0},
        "none of them (no drift, linear, RT60 0.1 s)": {
            "drift_ppm": 0.0,
            "drive": 0.05,
            "rt60": 0.1,
        },
    }
    out: dict[str, float] = {}
    for name, kw in cases.items():
        d = double_talk_figures(**kw)
        out[f"{name}_attenuation_db_ser_m10"] = d["attenuation_db_ser_m10"]
        out[f"{name}_correlation_ser_0"] = d["correlation_ser_0"]
        print(
            f"double talk, {name}: near end attenuated {d['attenuation_db_ser_m10']:.1f} dB at "
            f"SER -10 dB, correlation {d['correlation_ser_0']:.2f} at 0 dB",
            flush=True,
        )
    return out


# AEC3 reads "field trials" when it is made (echo_canceller3.cc, AdjustConfig): the only
# way left to change its settings, neither binding exposing EchoCanceller3Config. The wheel
# exports webrtc::field_trial::InitFieldTrialsFromString (x86_64 and aarch64 alike).
FIELD_TRIALS_SYMBOL = "_ZN6webrtc11field_trial25InitFieldTrialsFromStringEPKc"
SUPPRESSOR_TRIALS = {
    # webrtc's suppressor settings by field trial (upstream names, M108 on): what would keep
    # the near end in double talk: the masks more transparent, the near-end state sooner
    "suppressor tuning override (masks 3/3.5, near-end ENR 0.1)": (
        "WebRTC-Aec3SuppressorTuningOverride/nearend_tuning_mask_lf_enr_transparent:3,"
        "nearend_tuning_mask_lf_enr_suppress:3.5,nearend_tuning_mask_hf_enr_transparent:3,"
        "nearend_tuning_mask_hf_enr_suppress:3.5,normal_tuning_mask_lf_enr_transparent:3,"
        "normal_tuning_mask_lf_enr_suppress:3.5,normal_tuning_mask_hf_enr_transparent:3,"
        "normal_tuning_mask_hf_enr_suppress:3.5,dominant_nearend_detection_enr_threshold:0.1/"
    ),
    "normal LF mask override 3": "WebRTC-Aec3SuppressorNormalLfMaskTransparentOverride/3/",
    "dominant near-end ENR override 0.1": (
        "WebRTC-Aec3SuppressorDominantNearendEnrThresholdOverride/0.1/"
    ),
    "sensitive dominant near end": "WebRTC-Aec3SensitiveDominantNearendActivation/Enabled/",
    "anti-howling kill switch": "WebRTC-Aec3AntiHowlingMinimizationKillSwitch/Enabled/",
    "conservative tail": "WebRTC-Aec3ConservativeTailFreqResponse/Enabled/",
    # two trials the wheel does read (their names are in its .so): proof that a trial
    # reaches AEC3 at all; neither touches the suppressor
    "short headroom kill switch": "WebRTC-Aec3ShortHeadroomKillSwitch/Enabled/",
    "min ERLE during onsets kill switch": "WebRTC-Aec3MinErleDuringOnsetsKillSwitch/Enabled/",
}
_trials_buffer: Any = None  # webrtc keeps the pointer, not a copy: alive for the process


def field_trial_figures(trials: str) -> dict[str, float]:
    """AEC3 made after ``trials`` were set (in a process of its own: trials are global and
    read once, when an AEC3 is made): a fingerprint of its output on the rig's echo and the
    double-talk figures."""
    import ctypes
    import hashlib

    global _trials_buffer
    so = ctypes.CDLL(_binding("pywebrtc-audio")._webrtc_audio.__file__)
    init = getattr(so, FIELD_TRIALS_SYMBOL)
    init.argtypes = [ctypes.c_char_p]
    _trials_buffer = ctypes.create_string_buffer(trials.encode())
    init(_trials_buffer)
    play = _speech(8, seed=2)
    mic = voice_eval.echo_at_mic(play)
    out = _cancelled(mic, play)
    digest = hashlib.sha1(np.ascontiguousarray(out).tobytes()).hexdigest()
    d = double_talk_figures()
    return {"fingerprint": float(int(digest[:12], 16)), **d}


def field_trials() -> dict[str, dict[str, float]]:
    """Each trial of SUPPRESSOR_TRIALS against none: does it change AEC3's output at all,
    and what does it do to double talk (issue 22: correlation ≥ 0.8 at SER 0 dB)."""
    import subprocess

    from agentd.audio.echo import library

    so = library()._webrtc_audio.__file__
    blob = Path(so).read_bytes()
    r = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True)
    print(
        f"{Path(so).name} exports InitFieldTrialsFromString: "
        f"{'yes' if FIELD_TRIALS_SYMBOL in r.stdout else 'no'}",
        flush=True,
    )
    got: dict[str, dict[str, float]] = {}
    for name, trials in {"none": "", **SUPPRESSOR_TRIALS}.items():
        m = got[name] = _own_process("--field-trial", trials)
        same = m["fingerprint"] == got["none"]["fingerprint"]
        # (the compiler keeps a long name's first 32 characters as two 16-byte constants)
        known = all(n[:32].encode() in blob for n in trials.split("/")[::2] if n)
        what = (
            f"name in the library {'yes' if known else 'no'}, output "
            f"{'identical to none' if same else 'CHANGED'}"
            if trials
            else "no trial"
        )
        print(
            f"{name}: {what}; double talk "
            f"{m['attenuation_db_ser_m10']:.1f} dB at SER -10, correlation "
            f"{m['correlation_ser_0']:.3f} at 0 dB (≥ 0.8)",
            flush=True,
        )
    return got


class _Livekit:
    """``livekit.rtc.AudioProcessingModule`` (AEC3 alone) behind pywebrtc-audio's calls, for
    --bindings: one 10 ms int16 frame per call each way (another size aborts the process;
    EchoCanceller.process has refused those before they get here)."""

    def __init__(self, rate: int = RATE, channels: int = 1) -> None:
        from livekit import rtc

        self.rtc = rtc
        self.apm = rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
        self.n = rate // 100

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        out = np.empty_like(near)
        n, rtc = self.n, self.rtc
        for i in range(0, near.size, n):
            self.apm.process_reverse_stream(rtc.AudioFrame(far[i : i + n].tobytes(), RATE, 1, n))
            f = rtc.AudioFrame(bytearray(near[i : i + n].tobytes()), RATE, 1, n)
            self.apm.process_stream(f)
            out[i : i + n] = np.frombuffer(f.data, np.int16)
        return out


def _binding(name: str) -> Any:
    """The native module for ``name``: pywebrtc-audio (the daemon's) or livekit."""
    import types

    from agentd.audio.echo import library

    if name == "pywebrtc-audio":
        return library()
    return types.SimpleNamespace(EchoCanceller=_Livekit)


def binding_figures(name: str, runs: int = 4) -> dict[str, float]:
    """One binding's component figures (run in a process of its own, under the kernel's W^X
    lock as the unit runs: its RSS and threads are its own)."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    mdwe = libc.prctl(65, 1, 0, 0, 0) == 0 and libc.prctl(66, 0, 0, 0, 0) == 1

    def rss_kb() -> int:  # now, not the peak (an import's passing peak hid it)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    rss0 = rss_kb()
    lib = _binding(name)  # loaded, made and run for 1 s: what a device holds for it
    aec = lib.EchoCanceller(RATE, 1)
    aec.process(*(np.ones(RATE, np.int16),) * 2)
    out: dict[str, float] = {"mdwe": float(mdwe)}
    out["rss_delta_mb"] = (rss_kb() - rss0) / 1024
    e = erle_figures(lib=lib)
    out.update(e)
    out.update(double_talk_figures(lib=lib))
    play = _speech(20, seed=2)
    mic = voice_eval.echo_at_mic(play)
    near = np.frombuffer(bytes(AudioFrame.from_floats(mic, RATE).audio), "<i2")
    far = np.frombuffer(bytes(AudioFrame.from_floats(play, RATE).audio), "<i2")
    ms = []
    for _ in range(runs):
        aec, n = lib.EchoCanceller(RATE, 1), RATE // 50
        t = time.process_time()
        for i in range(0, near.size - n + 1, n):
            aec.process(near[i : i + n], far[i : i + n])
        ms.append((time.process_time() - t) / (near.size / RATE) * 1000)
    out["cpu_ms_per_s"], out["cpu_ms_per_s_median"] = min(ms), float(np.median(ms))
    out["threads"] = float(len(os.listdir("/proc/self/task")))
    return out


def bindings() -> dict[str, dict[str, float]]:
    """The AEC3 bindings side by side (issue 22: livekit against pywebrtc-audio), each in
    its own process; livekit is bench-only: ``.venv/bin/pip install livekit``."""
    import importlib.metadata

    got: dict[str, dict[str, float]] = {}
    for name, dist in (("pywebrtc-audio", "pywebrtc-audio"), ("livekit", "livekit")):
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            print(f"{name}: not installed (.venv/bin/pip install {dist})")
            continue
        size = sum(f.size or 0 for f in files) / 1e6
        m = got[name] = _own_process("--binding", name)
        print(
            f"{name} ({size:.1f} MB installed): ERLE median {m['erle_median_db']:.1f} dB, p10 "
            f"{m['erle_p10_db']:.1f}, first 0.5 s {m['erle_onset_db']:.1f}; double talk "
            f"{m['attenuation_db_ser_m10']:.1f} dB at SER -10, correlation "
            f"{m['correlation_ser_0']:.2f} at 0 dB; AEC3 alone {m['cpu_ms_per_s']:.2f} / "
            f"{m['cpu_ms_per_s_median']:.2f} ms CPU per audio-second (min / median); RSS "
            f"+{m['rss_delta_mb']:.1f} MB, {m['threads']:.0f} threads; under the W^X lock: "
            f"{'ran' if m['mdwe'] else 'lock refused'}",
            flush=True,
        )
    return got


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
                            _aec3_state(h)
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
                            # the trials measure the device as it runs for months: the
                            # canceller has heard WARMUP_S of its own sound first (from a
                            # fresh start the rule asks more evidence until WARM_S, and the
                            # canceller still leaks now and then in its first ~20 s: in
                            # runs A-E 3-5 of the first 5 trials were the slow ones)
                            warm = echo_scenes.Answers()
                            while h.daemon.echo.heard_s < WARMUP_S:
                                got = await echo_scenes.echo_only_answers(h, talk, 1, 1.0)
                                warm.asked += got.asked
                                warm.whole += got.whole
                            cut = warm.asked - warm.whole
                            out["e2e_warmup_answers"] = warm.asked
                            out["e2e_warmup_cut"] = cut
                            print(
                                f"  warm-up: {warm.asked} echo-only answers through the rig "
                                f"({h.daemon.echo.heard_s:.0f} s of far-end sound heard), "
                                f"{cut} cut",
                                flush=True,
                            )
                            for ser in (-5.0, -10.0):
                                res = []
                                for k in range(trials):
                                    phrase = echo_scenes.PHRASES[k % len(echo_scenes.PHRASES)]
                                    res.append(await echo_scenes.barge_in(h, talk, ser, phrase))
                                _barge_report(out, ser, res)
                            h.sim.pace = 1.0
                            after = await echo_scenes.echo_only_answers(h, talk, 1, 1.0)
                            _aec3_state(h)
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


def _aec3_state(h: Any) -> None:
    """Which AEC3 ran in the daemon and the delay it was handed (the echo estimate's), how
    often the speaker ran dry (answer audio late; the device starved: its thread late), and
    how often a frame's far end was handed with a hole (not written after HOLD_MAX_S)."""
    ec = h.daemon.echo
    if ec is None or ec.aligner is None:
        return
    d = ec.aligner.echo_delay
    pb = h.daemon.playback
    dry = (
        "no speaker"
        if pb is None
        else f"the speaker ran dry {pb.stats.underruns}× mid-answer, "
        f"{pb.stats.starved}× the device itself"
    )
    print(
        f"    (AEC3: {_build(ec)}; delay handed {ec.stream_delay_ms} ms, moved "
        f"{ec.delay_moves}× ({ec.jumps} on a jump or a path move; the linear filter lost the "
        f"echo {ec.path_moves}×, the echo slipped under it {ec.slips}×; a jump refused while "
        f"the filter fitted {ec.refused}×); echo estimate "
        f"{'-' if d is None else d * 10} ms behind the reference, aligner moves "
        f"{ec.aligner.moves}; far end resampled by "
        f"{ec.far.ppm:+.1f} ppm{' (compensating)' if ec.far.compensate else ''}; {dry}; "
        f"the far end came short {ec.far.short}× of {ec.frames} frames)",
        flush=True,
    )


AEC3_INPUTS: list[dict[str, list[Any]]] = []  # --aec3-inputs: per canceller made, its calls


def _record_aec3_inputs() -> None:
    """Every native AEC3 the daemon's code makes from here on records what it is handed
    (each process() call's microphone and far end, the delay handed then, the monotonic
    time: FEATURES' column 9; and its output, to check a replay against): AEC3 is
    deterministic, so a replay of one canceller's calls reproduces its output and linear
    output sample for sample, and a variant (the far end moved at an onset, another config)
    can be tried offline on the run's own audio (bench/aec3_replay.py)."""
    from agentd.audio import echo

    made = echo.aec3

    class Recorded:
        def __init__(self, native: Any) -> None:
            self.native = native
            self.calls: dict[str, list[Any]] = {
                "near": [],
                "far": [],
                "delay": [],
                "at": [],
                "out": [],
            }
            AEC3_INPUTS.append(self.calls)

        @property
        def stream_delay_ms(self) -> int:
            return int(self.native.stream_delay_ms)

        @stream_delay_ms.setter
        def stream_delay_ms(self, ms: int) -> None:
            self.native.stream_delay_ms = ms

        def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
            c = self.calls
            c["near"].append(near.copy())
            c["far"].append(far.copy())
            c["delay"].append(self.native.stream_delay_ms)
            c["at"].append(time.monotonic())
            out: np.ndarray = self.native.process(near, far)
            c["out"].append(out.copy())
            return out

        def linear(self) -> np.ndarray:
            out: np.ndarray = self.native.linear()
            return out

    echo.aec3 = lambda lib: Recorded(made(lib))  # type: ignore[assignment]


def _save_aec3_inputs(prefix: str) -> None:
    """Each canceller's calls as PREFIX_K.npz: near, far and AEC3's output (int16,
    concatenated), and per call its length, the delay handed and the time."""
    for k, c in enumerate(AEC3_INPUTS):
        if not c["near"]:
            continue
        np.savez(
            f"{prefix}_{k}.npz",
            near=np.concatenate(c["near"]),
            far=np.concatenate(c["far"]),
            out=np.concatenate(c["out"]),
            n=np.array([x.size for x in c["near"]]),
            delay=np.array(c["delay"]),
            at=np.array(c["at"]),
        )


def _build(ec: EchoCanceller) -> str:
    return "patched build, AEC3_CONFIG" if ec.tuned else "stock wheel, AEC3's defaults"


def _barge_report(out: dict[str, float], ser: float, res: list[Barge]) -> None:
    cut = sum(r.self_cut for r in res)  # no trial: the answer cut itself first
    cut_at = [f"{r.heard_ms} ({r.cut_state})" for r in res if r.self_cut]
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
    # nearest rank over every trial, a miss counted as never: finite while ≤ 5 % are missed
    ranked = sorted([*lat, *[float("inf")] * missed])
    p95 = ranked[math.ceil(0.95 * len(ranked)) - 1] if ranked else float("inf")
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
    ev = [r.evidence_ms for r in res if r.evidence_ms is not None]
    dec = [r.decided_ms for r in res if r.decided_ms is not None]
    print(
        f"    where it went (median / p95 ms from the talker's onset): the first frame counted "
        f"as the talker's {_mp(ev)}, the writer stopped {_mp(dec)}, the last of the answer "
        f"out {_mp(lat)}; talker frames while the stream's delay was unconfirmed: "
        f"{sum(r.unsettled_ms for r in res)} ms in {sum(r.unsettled_ms > 0 for r in res)} trials; "
        f"answers that cut themselves did so at {cut_at} ms heard",
        flush=True,
    )
    _slow_causes(res, target)


def _slow_causes(res: list[Barge], target: float) -> None:
    """Each trial slower than ``target`` (or missed) by cause: its frames replayed through
    the policy as it was at the talker's onset with one wait taken away (Barge.replay_ms).
    A wait whose removal brings the decision under target - PIPE_MS is that trial's cause;
    else the VAD (its first counted frame late, or too few of them), or the pipeline from the
    deciding frame to the answer's last sample out (decided with time to spare)."""
    slow = [r for r in res if r.latency_ms is None or r.latency_ms > target]
    causes: dict[str, int] = {}
    for r in slow:
        rp = r.replay_ms
        budget = target - PIPE_MS
        as_is = rp.get("as_is")
        if as_is is not None and as_is <= budget:
            cause = "pipeline (decided in time, stopped late)"
        elif (v := rp.get("settled")) is not None and v <= budget:
            cause = "not settled (evidence cleared)"
        elif (v := rp.get("warm")) is not None and v <= budget:
            cause = "cold (onset / WARM_S: cold_need_ms asked)"
        elif (v := rp.get("both")) is not None and v <= budget:
            cause = "not settled and cold together"
        elif r.evidence_ms is None or r.evidence_ms > budget:
            cause = "VAD/level: no frame counted in time"
        else:
            cause = "VAD/level: too few frames counted"
        causes[cause] = causes.get(cause, 0) + 1
    detail = ", ".join(f"{n} {c}" for c, n in sorted(causes.items(), key=lambda kv: -kv[1]))
    print(
        f"    slow trials (> {target:.0f} ms or missed): {len(slow)} of {len(res)}"
        + (f": {detail}" if slow else ""),
        flush=True,
    )
    for r in slow:
        rp = {k: "-" if v is None else f"{v:.0f}" for k, v in r.replay_ms.items()}
        lat = "missed" if r.latency_ms is None else f"{r.latency_ms:.0f}"
        print(
            f"      {lat} ms: first counted frame {r.evidence_ms or float('nan'):.0f}, decided "
            f"(replayed as is / settled / warm / both) {rp}, unsettled talker frames "
            f"{r.unsettled_ms} ms",
            flush=True,
        )


def _mp(v: list[float]) -> str:
    if not v:
        return "n/a"
    return f"{np.median(v):.0f} / {np.percentile(v, 95):.0f}"


def estimate_cpu(seconds: float = 20, repeat: int = 10) -> float:
    """CPU (process time) per audio-second of the echo estimate voice barge-in uses
    (Aligner._envelope) while the device plays, on its own: 20 ms frames of speech and its
    echo 0.3 s later."""
    import os

    from agentd.audio.echo import Aligner, FarEnd
    from agentd.audio.pcm import to_int16

    play = np.frombuffer(to_int16(voice_eval._playback(np.random.default_rng(5), seconds)), "<i2")
    mic = (np.concatenate([np.zeros(4800, np.int16), play])[: play.size] // 2).astype(np.int16)
    al = Aligner(FarEnd())
    t = os.times()
    for _ in range(repeat):
        for k in range(play.size // 320):
            al._envelope(mic[k * 320 : (k + 1) * 320], play[k * 320 : (k + 1) * 320])
    u = os.times()
    ms = (u.user + u.system - t.user - t.system) / (seconds * repeat) * 1000
    print(f"echo estimate for voice barge-in: {ms:.2f} ms CPU per audio-second played", flush=True)
    return ms


def hot_path_cpu(seconds: float = 20, runs: int = 5) -> dict[str, float]:
    """CPU (process time, min / median of ``runs``) per audio-second of two hot spots of the
    canceller's path, on their own (issue 22's review): the Aligner while an answer's delay
    is unconfirmed (block, whose echo estimate computes the frame's 10 ms block energies,
    then cancelled on the same energies: 20 ms frames of speech, its echo 20 ms later, the
    output 30 dB down), and FarEnd.heard while the drift estimator sleeps (sure: no segment
    key built, only the ppm applied counted)."""
    from agentd.audio.echo import Aligner, FarEnd
    from agentd.audio.pcm import to_int16

    play = np.frombuffer(to_int16(voice_eval._playback(np.random.default_rng(5), seconds)), "<i2")
    mic = (np.concatenate([np.zeros(320, np.int16), play])[: play.size] // 2).astype(np.int16)
    out = (mic // 30).astype(np.int16)
    unconfirmed, asleep = [], []
    for _ in range(runs):
        al = Aligner(FarEnd())
        t = time.process_time()
        for k in range(play.size // 320):
            s = slice(k * 320, (k + 1) * 320)
            energy = al.block(mic[s], play[s])
            al._confirmed = -1  # (kept unconfirmed: the case measured)
            al.cancelled(out[s], energy)
        unconfirmed.append((time.process_time() - t) / seconds * 1000)
        far = FarEnd()
        far.compensate, far.ppm = True, 100.0
        d = far.drift
        d.running, d.sure, d.estimate, d._since = False, True, 100.0, -(1 << 60)  # (no recheck)
        z = np.zeros(320, np.int16)
        frames = 50 * 1000  # 1000 s of 20 ms frames
        t = time.process_time()
        for _ in range(frames):
            far.heard(z, z)
        asleep.append((time.process_time() - t) / (frames / 50) * 1000)
    out_ = {
        "aligner_unconfirmed_ms_per_s": min(unconfirmed),
        "aligner_unconfirmed_ms_per_s_median": float(np.median(unconfirmed)),
        "heard_asleep_us_per_s": min(asleep) * 1000,
        "heard_asleep_us_per_s_median": float(np.median(asleep)) * 1000,
    }
    print(
        f"CPU per audio-second (process time, min / median of {runs}): the aligner while the "
        f"delay is unconfirmed (block + cancelled) {out_['aligner_unconfirmed_ms_per_s']:.2f} / "
        f"{out_['aligner_unconfirmed_ms_per_s_median']:.2f} ms; FarEnd.heard while the drift "
        f"estimator sleeps {out_['heard_asleep_us_per_s']:.1f} / "
        f"{out_['heard_asleep_us_per_s_median']:.1f} µs",
        flush=True,
    )
    return out_


GC_PAUSES: list[tuple[int, float, float]] = []  # (generation, monotonic at its end, ms)


def _watch_gc() -> None:
    """Every collection of the cyclic garbage collector from here on into GC_PAUSES: it holds
    the GIL, so every thread of the daemon (Playback's writer too) waits it out."""
    import gc

    began = [0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        now = time.monotonic()
        if phase == "start":
            began[0] = now
        else:
            GC_PAUSES.append((info["generation"], now, (now - began[0]) * 1000))

    gc.callbacks.append(watch)


STALLS: list[str] = []  # the process held up STALL_MS or more, each said as it was seen
STALL_MS = 50.0  # Playback's device holds 60 ms while an answer plays
STALL_WATCH_S = 0.02  # (a snapshot costs ~0.2 ms: ~1% of a core)


def _schedstat() -> dict[int, tuple[int, int]]:
    """Per thread of this process: (ns on a CPU, ns waiting on a run queue)."""
    out: dict[int, tuple[int, int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                on, wait, _ = f.read().split()
        except (OSError, ValueError):  # (the thread ended)
            continue
        out[int(tid)] = (int(on), int(wait))
    return out


def _busy() -> tuple[int, int]:
    """The machine's CPU time (jiffies): busy, all."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def _watch_stalls() -> None:
    """A thread that wakes every STALL_WATCH_S and, when STALL_MS or more passed since it
    last looked, says what each of the process's threads did meanwhile (ms on a CPU, ms
    runnable but waiting for one) and how busy the machine was: a thread holding the GIL
    shows as CPU, the machine's other work as run-queue waits. Playback's writer waits out
    the same stalls, and its device runs dry when one outlasts what it holds (FEATURES'
    column 29)."""
    import itertools
    import threading
    import traceback

    def names() -> dict[int, str]:
        return {t.native_id or 0: t.name for t in threading.enumerate()}

    def run() -> None:
        known = names()
        prev, prev_busy, prev_t = _schedstat(), _busy(), time.monotonic()
        while True:
            time.sleep(STALL_WATCH_S)
            now = time.monotonic()
            cur, busy = _schedstat(), _busy()
            gap = (now - prev_t) * 1000
            if gap >= STALL_MS:
                if any(t not in known for t in cur):
                    known = names()
                use = []  # (ns on a CPU, thread id, what it did)
                for tid, (on, wait) in cur.items():
                    on0, wait0 = prev.get(tid, (on, wait))
                    if (on - on0) + (wait - wait0) >= 2e6:
                        name = known.get(tid, str(tid)).removeprefix("agentd-")
                        said = f"{name} {(on - on0) / 1e6:.0f}+{(wait - wait0) / 1e6:.0f}"
                        use.append((on - on0, tid, said))
                use.sort(reverse=True)
                where = ""  # the busiest thread's stack now, just after it
                ident = next(
                    (t.ident for t in threading.enumerate() if use and t.native_id == use[0][1]),
                    None,
                )
                frame = sys._current_frames().get(ident) if ident is not None else None
                if frame is not None:
                    where = " < ".join(
                        f"{f.f_code.co_name}:{line}"
                        for f, line in itertools.islice(traceback.walk_stack(frame), 4)
                    )
                machine = 100 * (busy[0] - prev_busy[0]) / max(1, busy[1] - prev_busy[1])
                STALLS.append(
                    f"{now:.3f} {gap:.0f} ms (machine {machine:.0f}% busy; ms on CPU+waiting: "
                    f"{', '.join(u for _, _, u in use)}; the busiest at {where or '-'})"
                )
            prev, prev_busy, prev_t = cur, busy, now

    threading.Thread(target=run, name="stall-watch", daemon=True).start()


def _gc_summary(t0: float) -> None:
    """The collector's pauses over the run: by generation, and the full ones of 10 ms or
    more by when they ended (s since the run began), to set beside the times the speaker's
    device ran dry (FEATURES' columns 9 and 29)."""
    for g in (0, 1, 2):
        ms = [p for gen, _, p in GC_PAUSES if gen == g]
        if ms:
            print(
                f"collector, generation {g}: {len(ms)} pauses, median {np.median(ms):.2f} ms, "
                f"max {max(ms):.1f} ms",
                flush=True,
            )
    long = [(at - t0, ms) for gen, at, ms in GC_PAUSES if gen == 2 and ms >= 10]
    if long:
        print(
            f"full collections of 10 ms or more (s after monotonic {t0:.1f}, ms): "
            + ", ".join(f"{at:.1f} {ms:.0f}" for at, ms in long),
            flush=True,
        )


def e2e(answers: int = 13, trials: int = 40) -> dict[str, float]:
    """The real daemon end to end (see the module's docstring)."""
    import asyncio

    t = time.monotonic()
    _watch_gc()
    _watch_stalls()
    print(
        f"end to end, the real daemon (issue 22); AEC3: {_build(EchoCanceller(EchoSetup(aec=True)))}",
        flush=True,
    )
    out = asyncio.run(_e2e_cases(answers, trials))
    cases = [k for k in out if k.endswith("_answers")]
    total = sum(out[k] for k in cases)
    cut = sum(out[k.replace("_answers", "_cut")] for k in cases)
    if cases:
        print(f"self-interruptions: {cut:.0f} of {total:.0f} echo-only answers (0)", flush=True)
    _gc_summary(t)
    print(f"the process held up {STALL_MS:.0f} ms or more {len(STALLS)}x (monotonic):", flush=True)
    for line in STALLS:
        print(f"  {line}", flush=True)
    print(f"({time.monotonic() - t:.0f} s)", flush=True)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--e2e"]:
        # --features PATH: every frame the policy judged, labelled, saved as .npy (the
        # columns: tests/echo_scenes.py FEATURES); --shadow: the daemon is never told to
        # barge in by voice (echo_scenes.SHADOW), so the features hold every answer whole
        feat = sys.argv.index("--features") if "--features" in sys.argv else 0
        if "--shadow" in sys.argv:
            if not feat:
                sys.exit("--shadow records features only: give --features PATH")
            from tests import echo_scenes

            echo_scenes.SHADOW = True
            print("shadow mode: no voice barge-in acts; replay the features for figures")
        # --aec3-inputs PREFIX: every canceller's AEC3 input, PREFIX_K.npz (_save_aec3_inputs)
        raw = sys.argv.index("--aec3-inputs") if "--aec3-inputs" in sys.argv else 0
        if raw:
            _record_aec3_inputs()
        e2e(*[int(a) for a in sys.argv[2:] if a.isdigit()][:2])
        if raw:
            _save_aec3_inputs(sys.argv[raw + 1])
        if feat:
            from tests.echo_scenes import FEATURES

            np.save(sys.argv[feat + 1], np.array(FEATURES, dtype=np.float64))
    elif sys.argv[1:2] == ["--estimate-cpu"]:
        estimate_cpu()
    elif sys.argv[1:2] == ["--hot-path"]:
        hot_path_cpu()
    elif sys.argv[1:2] == ["--cpu"]:
        c = cpu_figures()
        print(", ".join(f"{k.removeprefix('cpu_ms_per_s_')} {v:.2f}" for k, v in c.items()))
    elif sys.argv[1:2] == ["--slips"]:
        slip_figures()
    elif sys.argv[1:2] == ["--bindings"]:
        bindings()
    elif sys.argv[1:2] == ["--double-talk-cause"]:
        double_talk_cause()
    elif sys.argv[1:2] == ["--field-trials"]:
        field_trials()
    elif sys.argv[1:2] == ["--field-trial"]:
        import json

        print(json.dumps(field_trial_figures(sys.argv[2])))
    elif sys.argv[1:2] == ["--binding"]:
        import json

        print(json.dumps(binding_figures(sys.argv[2])))
    else:
        main()
