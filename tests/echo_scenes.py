"""Full-duplex scenes on the real daemon (issue 22): the simulator answers, the answer plays into
the PulseAudio room, its echo comes back to the microphone (straight, or through the echo path
rig: agentd/sim/echo_path.py), and a near-end talker speaks on cue. Used by tests/test_echo.py
and bench/echo.py (the end-to-end figures)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agentd.audio.echo import AEC_DELAY, BLOCK
from agentd.audio.pcm import to_float, to_int16
from agentd.sim.echo_path import EchoPath, EchoRig
from agentd.sim.echo_path import Talker as Cues
from agentd.sim.room import PulseRoom
from agentd.voice.barge_in import db
from tests import rigs
from tests.harness import Harness

QUESTION = "what is the weather like today"
# a long answer with stretches of speech after its first second, so a barge-in lands mid-answer
LONG_REPLY = (
    "The weather today is sunny with a light breeze from the west. Temperatures reach twenty "
    "degrees by the afternoon, and the evening stays dry and mild with clear skies."
)
SHORT_REPLY = "It is sunny and twenty degrees."


def config(rig: bool, **over: Any) -> dict[str, Any]:
    """The daemon's settings for a scene (running_daemon's ``over``): hands-free, aec, voice
    barge-in; the microphone hears the room straight (``mic``) or through the rig (``earmic``)."""
    mic = {"device": "earmic", "rate": 16000, "channels": 1} if rig else {
        "device": "mic", "rate": 48000, "channels": 2}  # fmt: skip
    return {
        "turn__mode": "hands_free",
        "echo__mode": "aec",
        "echo__barge_in": "voice",
        "audio__input": mic,
        "sounds__enabled": False,
        **over,
    }


@functools.cache
def echo_rms(play: bytes) -> float:
    """RMS of the echo at the microphone of ``play`` (int16 PCM) over its voiced samples (what
    a signal-to-echo ratio is measured against); once per answer text (1.5 s of convolution)."""
    y = EchoPath(drift_ppm=0, noise_rms=0).process(to_float(np.frombuffer(play, "<i2")))
    return float(np.sqrt(np.mean(y[np.abs(y) > 1e-3] ** 2)))


@dataclass
class Talker:
    """Speaks into the scene: at the microphone (the rig's ``ear`` sink) or into the room."""

    room: PulseRoom
    rig: EchoRig | None
    tmp: Path
    n: int = 0
    _speech: dict[str, np.ndarray] = field(default_factory=dict)

    def speech(self, text: str) -> np.ndarray:
        """``text`` spoken (int16, 16 kHz), made once: espeak-ng runs in the daemon's own
        process and loop here, so a trial makes it before the answer it talks over plays."""
        if text not in self._speech:
            self._speech[text] = rigs.espeak(text, 16000, self.tmp / f"t{len(self._speech)}")
        return self._speech[text]

    def say(self, text: str, gain: float = 1.0) -> Any:
        """Start talking; the result's ``wait()`` returns when the speech has ended and its
        ``started`` is the moment the speech reached the microphone (rig) or was started."""
        self.n += 1
        pcm = np.frombuffer(to_int16(to_float(self.speech(text)), gain), "<i2")
        if self.rig is not None:
            return _Cue(self.rig.talker.say(pcm))
        wav = rigs.write_wav(self.tmp / f"t{self.n}.wav", pcm, 16000)
        proc = self.room.play(wav)
        proc.started = time.monotonic()  # type: ignore[attr-defined]
        return proc


@dataclass
class _Cue:
    cue: Path

    def wait(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not Cues.done(self.cue) and time.monotonic() < deadline:
            time.sleep(0.01)

    @property
    def started(self) -> float:
        t = Cues.started(self.cue)
        assert t is not None, "the rig never started the cue"
        return t

    @property
    def mixed(self) -> float:
        t = Cues.mixed(self.cue)
        return self.started if t is None else t


@dataclass
class Answers:
    asked: int = 0
    interrupts: int = 0
    truncates: int = 0
    whole: int = 0  # answers whose every sample played (heard_ms = what the server sent)
    short_ms: list[int] = field(default_factory=list)


async def answer(h: Harness, talk: Talker, text: str = QUESTION) -> tuple[str, int]:
    """Ask and let the answer play out; returns its item and the ms of it the speaker played
    (by Playback's accounting)."""
    sim, d = h.sim, h.daemon
    done = sim.responses_done
    p = talk.say(text)
    await asyncio.to_thread(p.wait, 20)
    await h.until(lambda: h.state() == "speaking" or sim.responses_done > done, timeout=30)
    item = d.conv.item_id
    await h.until(lambda: sim.responses_done > done, timeout=30)
    pb = d.playback
    assert pb is not None and item is not None
    await h.until(lambda: not pb.busy() and h.state() != "speaking", timeout=30)
    return item, pb.heard_ms(item)


def reply_ms(h: Harness) -> int:
    """The length of the simulator's answer as sent (ms)."""
    return len(h.sim.speech.pcm(h.sim.reply, 24000)) // 48


# Every frame the barge-in policy judged in the scenes (bench/echo.py --e2e --features):
# (talker: 0 echo-only answer / 1 barge-in trial, seconds since the talker's onset (-inf
# before it), ms, voiced, dBFS, expected echo dBFS, heard_s, settled, barged in, when, the
# estimate's delay in blocks and gain in dB, the linear filter's output: voiced (-1: none)
# and dBFS, the loudest band over the echo expected there, dB (nan: none), and why an answer
# is unconfirmed: the far end's epoch and stream count, the aligner's reference moves, the
# delays handed to AEC3, and whether the canceller confirmed the epoch (-1: no canceller);
# then the echo estimate's searches that found a delay, the last one's match and the delay
# handed to AEC3 now (ms); the raw microphone's dBFS under the judged frame: what the
# linear filter removed of it; PathWatch's count; the clocks and the speaker (_clock); and
# whether the canceller was re-fitting a slipped echo (EchoCanceller.refitting))
FEATURES: list[tuple[float, ...]] = []
# Shadow mode (bench/echo.py --e2e --shadow): the policy judges and FEATURES records, but the
# daemon is never told to barge in by voice, so every answer and every trial is recorded
# whole and any rule can be replayed on all of it (bench/barge_replay.py); with the policy
# acting, the record of an answer ends where the run's own rule cut it
SHADOW = False


def _estimate(h: Harness) -> tuple[float, float]:
    """The echo estimate's delay (blocks; -1: not found) and gain (dB) now."""
    al = h.daemon.echo.aligner if h.daemon.echo is not None else None
    if al is None or al.echo_delay is None:
        return (-1.0, 0.0)
    return (float(al.echo_delay), al.echo_gain_db)


def _epoch(h: Harness) -> tuple[float, ...]:
    """The counters that say why an answer is unconfirmed now (FEATURES)."""
    ec = h.daemon.echo
    al = ec.aligner if ec is not None else None
    if ec is None or al is None:
        return (-1.0,) * 8
    far = ec.far
    confirmed = float(al.confirmed)
    searches = (al.echo_found, al.echo_r, ec.stream_delay_ms)
    return (far.epoch, far.streams, al.moves, ec.delay_moves, confirmed, *searches)


def _path_moves(h: Harness) -> float:
    """How often the canceller found its linear filter had lost the echo (PathWatch; -1: no
    canceller)."""
    return -1.0 if h.daemon.echo is None else float(h.daemon.echo.path_moves)


def _clock(h: Harness) -> tuple[float, ...]:
    """The far end's view of the microphone's clock: the capture timestamps' mean offset from
    its sample count (ms), its re-anchors, microphone audio the daemon lost (overruns plus
    frames dropped behind the loop), the speaker's underruns (answer audio late: continuous
    mode's silence fills in) and the times its device starved (its thread late: the echo
    moved, FarEnd.starved)."""
    far, cap, pb = h.daemon.far_end, h.daemon.capture, h.daemon.playback
    lost = -1.0 if cap is None else float(cap.stats.overruns + cap.stats.dropped_frames)
    under = (-1.0, -1.0) if pb is None else (float(pb.stats.underruns), float(pb.stats.starved))
    return (far._mic_err * 1000, float(far._anchors), lost, *under)


def _raw_db(h: Harness, ms: int) -> float:
    """The raw microphone's level under the ``ms`` frame just judged (dBFS, mean square; nan:
    no canceller), from the echo estimate's envelope (10 ms blocks, floored at
    ECHO_FLOOR_DB): AEC3's output lags its input by AEC_DELAY samples, so the blocks are
    weighed by how much of each the judged frame holds."""
    ec = h.daemon.echo
    if ec is None or ec.aligner is None:
        return math.nan
    n = ms * BLOCK // 10
    k = -(-(n + AEC_DELAY) // BLOCK)  # blocks back to the frame's first sample
    env = np.array(ec.aligner._env_near[-k:])
    # counted back from the newest sample, block i holds [after, after + BLOCK) and the
    # judged frame [AEC_DELAY, AEC_DELAY + n)
    after = np.arange(k)[::-1] * BLOCK
    overlap = np.clip(
        np.minimum(after + BLOCK, AEC_DELAY + n) - np.maximum(after, AEC_DELAY), 0, None
    )
    return float(10 * np.log10(np.sum(10 ** (env / 10) * overlap) / n))


def _feature(h: Harness, talker: float, onset: float, a: tuple[Any, ...], fired: bool) -> None:
    """One judged frame into FEATURES: ``a`` is the policy's arguments (ms, voiced, energy,
    heard_s, settled, echo, linear, over, refitting); energies in dB."""
    ms, voiced, energy, heard_s, settled, echo, linear, over, refitting = a
    now = time.monotonic()
    FEATURES.append(
        (
            talker,
            onset,
            ms,
            voiced,
            db(energy),
            db(echo),
            heard_s,
            settled,
            fired,
            now,
            *_estimate(h),
            -1.0 if linear is None else float(linear[0]),
            -math.inf if linear is None else db(linear[1]),
            math.nan if over is None else over(),
            *_epoch(h),
            _raw_db(h, ms),
            _path_moves(h),
            *_clock(h),
            float(refitting),
        )
    )


@contextlib.contextmanager
def _recording(h: Harness) -> Iterator[None]:
    """The policy's frames of echo-only answers into FEATURES."""
    policy = h.daemon.gate.barge_in
    judge = policy.frame

    def spy(*a: Any) -> bool:  # (the gate hands the policy all nine arguments, in order)
        fired = judge(*a)
        _feature(h, 0.0, -math.inf, a, fired)
        return fired and not SHADOW

    policy.frame = spy  # type: ignore[method-assign]
    try:
        yield
    finally:
        policy.frame = judge  # type: ignore[method-assign]


async def echo_only_answers(h: Harness, talk: Talker, n: int, pace: float) -> Answers:
    """Ask ``n`` questions; each answer plays with nobody speaking over it."""
    with _recording(h):
        return await _echo_only_answers(h, talk, n, pace)


async def _echo_only_answers(h: Harness, talk: Talker, n: int, pace: float) -> Answers:
    sim, d = h.sim, h.daemon
    sim.pace, sim.reply = pace, LONG_REPLY
    out = Answers()
    before = d.conv.counters.interrupts, len(sim.client_events("conversation.item.truncate"))
    for _ in range(n):
        _, heard = await answer(h, talk)
        out.asked += 1
        short = reply_ms(h) - heard
        out.whole += short <= 20
        if short > 20:
            out.short_ms.append(short)
    out.interrupts = d.conv.counters.interrupts - before[0]
    out.truncates = len(sim.client_events("conversation.item.truncate")) - before[1]
    return out


PHRASES = (
    "stop, wait a moment please",
    "hold on, I have another question",
    "no, that is not what I asked",
    "excuse me, can you repeat that",
)


@dataclass
class Barge:
    """One voice barge-in over a playing answer: ``latency_ms`` from the moment the talker's
    speech reached the microphone's sink (the rig's cue, after the rig's own output buffer)
    until the answer's last sample left the speaker (with aec the writer stops and what ALSA
    holds plays out), with cancel + truncate sent before; None if not detected within
    ``wait_s``. ``truncate_ms`` is what the truncate said was heard, ``heard_ms`` Playback's
    own count at that moment. Where the time went: ``evidence_ms`` until the loop had the
    first frame the policy counts as the talker's (voiced, above the floor), ``decided_ms``
    until the writer stopped; ``unsettled_ms`` of the talker's frames came while the stream's
    echo delay was unconfirmed (not counted as evidence)."""

    latency_ms: float | None
    decided_ms: float | None = None
    evidence_ms: float | None = None
    unsettled_ms: int = 0
    self_cut: bool = False  # the answer was cut (echo alone) before the talker spoke
    # a self-cut's state then: "no item" (the answer never began: not its echo), the state
    # it had left "speaking" for, whether an interruption had been counted, and in how many
    # turns the question was committed (two: its own second half interrupted its answer)
    cut_state: str = ""
    cancel_sent: bool = False
    truncate_ms: int | None = None
    heard_ms: int | None = None
    rig_ms: float = 0.0  # the rig's own output buffer: mixed in this long before it was heard
    # Why it took that long: the same frames replayed through a copy of the policy as it
    # was when the talker started, as it is ("as_is") and with one of its waits taken away
    # ("settled": the echo delay always confirmed; "warm": never cold, need_ms of evidence
    # even at an answer's onset or before WARM_S; "both"); ms from the talker's onset to the
    # frame that completes the barge-in (None: not within the trial)
    replay_ms: dict[str, float | None] = field(default_factory=dict)


async def barge_in(
    h: Harness, talk: Talker, ser_db: float, phrase: str, after_s: float = 1.5, wait_s: float = 4
) -> Barge:
    """Ask, let ``after_s`` of the answer play, then talk over it at ``ser_db`` (the talker's
    RMS against the answer's echo RMS at the microphone)."""
    sim, d = h.sim, h.daemon
    sim.pace, sim.reply = 1.0, LONG_REPLY
    # the talker's speech and level are made before the answer plays: made at the onset
    # they held the daemon's loop (this process's) 45-94 ms 0.15-0.2 s before it
    speech = talk.speech(phrase)
    echo = echo_rms(h.sim.speech.pcm(LONG_REPLY, 16000))
    gain = echo * 10 ** (ser_db / 20) / float(np.sqrt(np.mean(to_float(speech) ** 2)))
    done, interrupts0 = sim.responses_done, d.conv.counters.interrupts
    commits0 = len(sim.client_events("input_audio_buffer.commit"))
    await asyncio.to_thread(talk.say(QUESTION).wait, 20)
    await h.until(lambda: h.state() == "speaking" or sim.responses_done > done, timeout=30)
    item, pb = d.conv.item_id, d.playback
    assert pb is not None
    if item is not None:
        with _recording(h):  # nobody talks yet: the answer's echo alone
            await h.until(
                lambda: pb.heard_ms(item) >= after_s * 1000 or h.state() != "speaking",
                timeout=30,
            )
    if item is None or h.state() != "speaking":  # it cut itself before the talker spoke
        at = pb.heard_ms(item) if item is not None else 0
        fired = d.conv.counters.interrupts > interrupts0
        turns = len(sim.client_events("input_audio_buffer.commit")) - commits0
        state = (
            f"{'no item, ' if item is None else ''}{h.state()}{', interrupted' * fired}, "
            f"the question committed as {turns} turn{'s' * (turns != 1)}"
        )
        await h.until(lambda: not pb.busy() and h.state() in ("idle", "listening"), timeout=40)
        return Barge(None, self_cut=True, heard_ms=at, cut_state=state)
    interrupts = d.conv.counters.interrupts
    n_trunc = len(sim.client_events("conversation.item.truncate"))
    n_events = len(sim.events)
    flushed, silent = pb.flushed_at, pb.silent_at
    policy = d.gate.barge_in
    before = copy.deepcopy(policy)  # (the copy's bound frame is its own: replayed below)
    seen: list[tuple[float, bool, bool, int]] = []  # (when, evidence, settled, ms) per frame
    args: list[tuple[Any, ...]] = []  # each frame's arguments, for the replays
    judge = policy.frame

    # (as the gate hands them: ms, voiced, energy, heard_s, settled, echo, linear, over,
    # refitting)
    def spy(*a: Any) -> bool:
        now = time.monotonic()
        ms, voiced, energy, _, settled, echo, linear, over, _ = a
        seen.append((now, policy.counts(voiced, energy, echo, linear, over), settled, ms))
        args.append(a)
        fired = judge(*a)
        _feature(h, 1.0, now, a, fired)
        return fired and not SHADOW

    k0 = len(FEATURES)
    policy.frame = spy  # type: ignore[method-assign]
    cue = talk.say(phrase, gain)
    sim.reply = SHORT_REPLY  # the answer to the talker's words (a turn of their own)
    deadline = time.monotonic() + wait_s
    while d.conv.counters.interrupts == interrupts and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    detected = d.conv.counters.interrupts > interrupts
    if detected:
        await h.until(lambda: pb.flushed_at != flushed and pb.silent_at != silent, timeout=2)
    heard = pb.heard_ms(item)
    policy.frame = judge  # type: ignore[method-assign]
    t0 = cue.started
    for k in range(k0, len(FEATURES)):  # (times since the talker's onset)
        f = FEATURES[k]
        FEATURES[k] = (f[0], f[1] - t0, *f[2:])
    talker = [s for s in seen if s[0] >= t0]
    first = next((t for t, yes, ok, _ in talker if yes and ok), None)
    await asyncio.to_thread(cue.wait, 20)
    await h.until(lambda: h.state() != "speaking", timeout=30)
    # the talker's words are a turn of their own: let it be answered and played out
    await h.until(lambda: not pb.busy() and h.state() in ("idle", "listening"), timeout=40)
    replay = _replays(before, args, [t for t, *_ in seen], t0)
    if not detected:
        unsettled = sum(ms for _, _, ok, ms in talker if not ok)
        return Barge(None, unsettled_ms=unsettled, replay_ms=replay)
    truncs = sim.client_events("conversation.item.truncate")[n_trunc:]
    cancels = [r for r in sim.events[n_events:] if r.event.get("type") == "response.cancel"]
    return Barge(
        (pb.silent_at - t0) * 1000,
        decided_ms=(pb.flushed_at - t0) * 1000,
        evidence_ms=None if first is None else (first - t0) * 1000,
        unsettled_ms=sum(ms for _, _, ok, ms in talker if not ok),
        cancel_sent=bool(cancels),
        truncate_ms=int(truncs[0]["audio_end_ms"]) if truncs else None,
        heard_ms=heard,
        rig_ms=(cue.started - cue.mixed) * 1000 if isinstance(cue, _Cue) else 0.0,
        replay_ms=replay,
    )


def _replays(
    before: Any, args: list[tuple[Any, ...]], when: list[float], t0: float
) -> dict[str, float | None]:
    """The trial's frames through copies of the policy (see Barge.replay_ms)."""
    out: dict[str, float | None] = {}
    for name in ("as_is", "settled", "warm", "both"):
        p = copy.deepcopy(before)
        if name in ("warm", "both"):
            p.cold_need_ms = p.need_ms
            p.warm_s = 0.0
        frames = args
        if name in ("settled", "both"):
            frames = [(*a[:4], True, *a[5:]) for a in args]
        _, at = replay_decision(p, frames, when, t0)
        out[name] = None if at is None else at * 1000
    return out


def replay_decision(
    policy: Any,
    args: Sequence[Sequence[Any]],
    when: Sequence[float],
    t0: float,
    watch: Callable[[Any, bool], None] | None = None,
) -> tuple[bool, float | None]:
    """Frames (the policy's arguments, each judged at ``when``) through ``policy``: whether it
    fired before ``t0`` (the talker's onset: an answer cut with nobody talking), and the
    first firing at or after it (s from ``t0``; None: not within the frames). Shared with
    bench/barge_replay.py, which replays a whole run's recorded frames."""
    early = False
    for a, t in zip(args, when, strict=True):
        fired = policy.frame(*a)
        if watch is not None:  # (the policy after each frame, and whether it fired)
            watch(policy, fired)
        if fired:
            if t >= t0:
                return early, t - t0
            early = True
    return early, None
