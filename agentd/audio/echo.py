"""Acoustic echo cancellation, noise suppression and automatic gain on the microphone path:
an adapter around WebRTC's audio processing (AEC3, NS, AGC2) from ``pywebrtc-audio``, the
optional extra ``pip install 'agentd[aec]'``.

Why it is built this way (each point was measured, see issue 22 and bench/echo.py):
- the far end is the exact int16 audio handed to ALSA, tapped in Playback's writer
  (:class:`FarEnd`), so the reference is handed over before its echo can reach the mic;
- the canceller sees a reference frame for every microphone frame it is given: zeros while
  nothing plays (skipping only those attenuates the user afterwards);
- it is created once per daemon (a fresh one attenuates early double talk more);
- every call into the native library gets whole 10 ms blocks: other sizes are refused here
  with a ValueError (one such livekit call aborts the whole process);
- with agentd's build of pywebrtc-audio (:func:`configurable`) AEC3 runs AEC3_CONFIG: our
  timeline + Aligner align the far end, so AEC3's own delay estimator is off and it only
  sees the delay it is handed (the echo estimate's, :func:`aec3_delay_ms`) plus its 160 ms
  filter, and the far end is resampled by the clocks' drift (FarEnd.compensate): only then
  does its linear filter hold the echo and the user come through double talk (0.85 against
  0.75); the stock wheel finds the bulk delay itself (up to ~0.5 s), no hint given;
- it is not called once the far end has been silent IDLE_AEC_S (the device idles most of
  the time: ~1 instead of ~9 ms of CPU per audio-second, bench/echo.py --cpu); the frames
  then pass with its own 8 ms delay, so the stream stays continuous both ways.

``pywebrtc-audio`` was chosen over ``livekit`` (``bench/echo.py --bindings``): the same echo
removed within 1 dB, the user kept better in double talk (6.3 dB / 0.77 against 10.6 dB /
0.52), about the same CPU, 0.4 MB instead of a whole WebRTC stack, numpy only, no threads;
both run under ``MemoryDenyWriteExecute``; neither released wheel exposes AEC3's settings,
and the webrtc field trials the wheel's AEC3 reads (``InitFieldTrialsFromString`` is
exported) do not reach its suppressor, which takes the near end in double talk
(``bench/echo.py --field-trials``: the suppressor trials leave the output bit for bit the
same), so none is set. agentd's build of it (``scripts/lib/pywebrtc-audio-aec3-config.patch``)
takes AEC3's config by name: AEC3_CONFIG (docs/aec3-config.md).
"""

from __future__ import annotations

import functools
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentd.audio.drift import DriftEstimator
from agentd.audio.frame import AudioFrame
from agentd.audio.pcm import SCALE, db
from agentd.audio.resample import VAD_RATE, StreamResampler
from agentd.config import EchoSettings, InputSettings

BLOCK = VAD_RATE // 100  # 10 ms at 16 kHz: the only size the native library is handed
FAR_KEEP_S = 2.0  # far end waiting beyond this is stale (the mic stopped): dropped
# Silence written for this long in a row is not resampled any more (zeros placed instead):
# longer than soxr MQ holds back (up to 38 ms at 48 -> 16 kHz, released in blocks). While
# compensating drift, only where a new ratio is due (FarEnd._compensated)
SKIP_SILENT_S = 0.1
# The reference is handed over this long before its sample is due at the speaker: margin for
# the error in both clocks (the capture timestamps jitter by a period); the rest of the
# delay is the sound path's, the same for every answer (the Aligner keeps it at TARGET_S;
# one beyond its reach is handed to AEC3, aec3_delay_ms; the stock wheel finds it itself).
LEAD_S = 0.0
TARGET_S = 0.02  # the echo's delay behind its reference, kept for every stream (Aligner)
IDLE_GAP_S = 0.5  # a stream after this much silence started from idle, sooner: restarted
# An answer's delay not confirmed by then (from its first sound; someone talks): trusted
# anyway. AEC3 re-learns a new delay it was not handed over ~2 s: at 1 s the rig's echo
# (a bulk delay beyond the aligner's reach) still leaked at -30 dBFS and cut the answer.
SETTLE_MAX_S = 3.0
LEARN_S = 1.5  # the aligner's moves this early in a stream are learned for its kind
# Sound after this much silence on the far end starts an answer: the canceller must show
# again that it removes the echo (Aligner.settled). Per stream only, a continuous stream
# (echo.mode aec) stayed "confirmed" for good: when the echo path moved under it (the rig
# dropped 20 ms of backlog), every answer after it leaked ~300 ms at its onset and was cut
# there, so AEC3 never heard enough of an answer to re-learn (40 of 40 barge-in trials in a
# row cut themselves at 0.6-0.8 s).
ANSWER_GAP_S = 1.0
# The canceller shows it has the answer's delay: this much echo removed (raw microphone
# energy over cancelled, dB) over CONVERGED_BLOCKS 10 ms blocks of far-end sound in a row;
# in the rig it removes ~34 dB when converged, 0-10 dB while it re-learns.
CONVERGED_DB = 15.0
CONVERGED_BLOCKS = 50
ALIGN_RATE = 4000  # the aligner works on the signals averaged down to this rate
ALIGN_S = 0.2  # each window of the reference matched against the microphone
ALIGN_STEP_S = ALIGN_S  # ... one after the other (overlapping ones "agree" by themselves)
ALIGN_MIN_S = 0.05  # lags searched: the echo up to this much before its reference
ALIGN_MAX_S = 0.2  # ... and this much after it (longer bulk delays: aec3_delay_ms)
ALIGN_MIN_R = 0.6  # a weaker match is not the echo alone (someone talks): not used
ALIGN_SURE_R = 0.9  # only a match this clear moves the reference or confirms it
ALIGN_MIN_RMS = 100.0  # a quieter reference window (int16 RMS) is not matched
# A delay this close to TARGET_S is left alone: AEC3 follows small changes (clock drift)
# itself, and moving the reference under it by a millisecond or two cost 14 dB of ERLE at
# 100 ppm drift; the sound server's jumps are ~20 ms.
ALIGN_TOL_S = 0.006
MEASURED_KEPT = 50  # the aligner's latest delays kept for diagnostics (Aligner.measured)
_K = VAD_RATE // ALIGN_RATE  # 16 kHz samples averaged into one of the aligner's
# the aligner's window in its samples: lags before the reference, the reference, lags after
_LO, _N, _HI = (int(v * ALIGN_RATE) for v in (ALIGN_MIN_S, ALIGN_S, ALIGN_MAX_S))
_MEAN = np.full(_K, 1 / _K, np.float32)  # (a product: a tenth of the cost of .mean)
IDLE_S = 0.5  # the microphone's clock is corrected only this long after the far end's end
REANCHOR_S = 0.06  # playback this far off the stream's own timing starts a new stream
MIC_JUMP_S = 0.15  # a capture timestamp this far off the microphone's clock re-anchors it
# Both are measured against each clock's own offset from the system's, followed as it creeps
# (the cards' clocks drift from it: a USB card or a HAT's crystal by up to ~100 ppm), not
# against the system's clock itself. Measured against it, a stream that ran on (echo.mode
# aec writes silence between answers, for weeks) re-anchored once the creep reached them,
# at 50 ppm every 20 min (a slow card's playback: a gap) or 50 min (a fast card's
# microphone), and each time the reference stepped 60-150 ms under AEC3's filter
# (tests/test_echo.py, FarEnd over hours; the rigs' clocks are the system's, so no run of
# theirs showed it). The playback's offset is followed no faster than this (3 ms a second,
# ten times a poor crystal's drift; the real-daemon test drives a card 1500 ppm off): a gap,
# which comes at once, still starts a new stream.
CREEP_PPM = 3000.0
# A microphone frame whose far end is not all placed yet waits for it, up to this long (the
# loop looks again every HOLD_POLL_S). The reference leads the echo (TARGET_S) and the
# far end is placed only once Playback wrote it and the resampler let it out (soxr MQ holds
# back up to 38 ms): at 1x delivery, where an answer arrives as it plays and the device holds
# only ~20 ms of it, the take ran ahead of the writes. Through the rig (PulseAudio, whose
# timing puts the stream's samples 0-28 ms before their write time), 100 takes in three
# answers came short and AEC3 was handed holes, 2-16 ms each, where the speaker played
# sound: the linear filter left that echo whole (2-5 dB taken off, 15-17 around it) and in
# one e2e run 3 of 13 answers at 1x cut themselves on it (H71). Waiting costs the frame
# that much more latency; frames after it queue behind it, so order and pacing hold. A far
# end missing more than this is not being written (a device that stopped): no wait.
HOLD_MAX_S = 0.04
HOLD_POLL_S = 0.005
OWED_MIN_S = 0.5 / VAD_RATE
# The echo expected at the microphone (Aligner.echo_energy), for voice barge-in: the far end's
# 10 ms envelope, at the echo's delay behind it and its gain, both found by matching the
# envelopes of the far end and the raw microphone (AEC3 does not say what it found).
ECHO_HIST = 300  # blocks of both envelopes kept (3 s)
ECHO_MAX_LAG = 60  # the echo's delay is searched up to this many blocks (0.6 s)
ECHO_EVERY = 100  # blocks of far-end sound between two searches
ECHO_MIN_R = 0.6  # a weaker envelope match is not the echo alone (someone talks): not used
# A match more than ECHO_MOVE_BLOCKS from the delay held is used only this clear: in run H21
# (bench/echo.py --e2e --features) a search 3 s after a talker found 2 blocks at r 0.62
# where the echo sat at 25; held for six answers, and the next clear search (26, r 0.92)
# then read as a jump (JUMP_BLOCKS) and reset AEC3's filters 279 ms into a talker's speech:
# that barge-in was lost. Of the 766 searches H20 and H21 used, no other moved 3 blocks or
# more; the rest matched at r >= 0.62 (a tenth under 0.8). The rig's backlog drops move
# the echo 2 blocks.
ECHO_MOVE_R = 0.8
ECHO_MOVE_BLOCKS = 2
# Blocks of far-end sound the windows of the best match and of the delay held now must hold,
# or the search is not used (and made again after half of ECHO_EVERY): ECHO_EVERY counts
# sound since the last search, which may lie scattered over answers' tails. Through the rig
# (bench/echo.py --e2e, every search traced) 15 of 593 searches moved the estimate to a
# wrong delay for a second, the next search moving it back: 8 by 5-28 blocks late (r ~0.8,
# matching an answer's tail) and 7 to 0 blocks (r 0.9-1.0, on windows holding 4-12 blocks
# of sound: the microphone's envelope was floored while idle, see _envelope); and one,
# agreeing with the search before, handed AEC3 0 ms for 180, whose echo then leaked until
# the answer proved it again. Replayed with this rule, one is left (to 0, since mended)
ECHO_MIN_SOUND = 50
ECHO_SPREAD = 2  # blocks either side of the delay (the match is only so sharp)
# The room rings on after the far end falls silent: the estimate falls no faster than this
# per block (RT60 0.3 s: 2 dB per 10 ms; slower is the safe side)
ECHO_DECAY_DB = 1.5
ECHO_FLOOR_DB = -80.0  # dBFS: the envelopes' floor (silence is not -inf)
_ENV_SCALE = 1 / (BLOCK * SCALE**2)  # a block's sum of squares into its mean square
_ENV_FLOOR = 10 ** (ECHO_FLOOR_DB / 10)  # ... and the floor as a mean square (bands too)
# The echo expected per band (Aligner.over_echo_db): AEC3 takes echo away and adds none, so a
# band of its output at least as loud as the whole echo expected in that band is no residual
# of it. Band edges (Hz) over the 10 ms blocks' spectrum (100 Hz bins), finer where speech is.
BANDS_HZ = (300, 600, 1000, 1500, 2200, 3000, 4000, 5500)
# The far end kept for it: the echo's longest delay searched and spread, and the room's ring
# on from full scale down to the envelopes' floor at ECHO_DECAY_DB per block
BAND_TAIL = math.ceil(-ECHO_FLOOR_DB / ECHO_DECAY_DB)
BAND_KEEP = ECHO_MAX_LAG + ECHO_SPREAD + BAND_TAIL + 2
_BINS = np.fft.rfftfreq(BLOCK, 1 / VAD_RATE)
# (bins, bands): a block's power spectrum into its bands' mean-square energy (Parseval; the
# full scale 1.0)
_TO_BANDS = (
    (np.digitize(_BINS, BANDS_HZ)[:, None] == np.arange(len(BANDS_HZ) + 1))
    * (2 / BLOCK**2 / SCALE**2)
).astype(np.float64)
# An echo gain outside this (dB) is no echo path but a match of something else (seen through
# the rig: 0 blocks at -50 dB, the estimate went to nothing and an answer cut itself)
ECHO_GAIN_DB = (-40.0, 20.0)
# The microphone's clock counts samples; its capture timestamps (jittering ±20 ms with the
# sound server's delivery) only anchor it: their offset is averaged, then followed over this
# many 10 ms blocks (20 s) for the drift between the card's clock and the system's, and
# applied only while nothing plays. Following each timestamp moved the echo's delay by
# samples from block to block, which AEC3 cannot track (correlation 0.99 -> 0.2).
MIC_FOLLOW_BLOCKS = 2000
# The canceller is not called once the far end has been silent this long: with nothing to
# cancel it cost 5.9 ms of CPU per audio-second on this x86 core (7.4 while playing), and the
# device idles most of the time. Longer than an echo's bulk delay (up to ~0.5 s) plus the
# room's reverberation, and than AEC3's own inactivity timers: frozen after 1 s it met the
# next answer less guarded than after a long silence (double-talk correlation 0.66 instead
# of 0.61); after 2 s, as after any silence (0.61, and the same ERLE per 100 ms).
IDLE_AEC_S = 2.0
# AEC3's output lags its input by this much (its 64-sample blocks; measured, and checked by
# tests/test_echo.py): bypassing it keeps the same lag, so the stream stays continuous.
AEC_DELAY = 128
# ... and its linear filter's output (EchoCanceller.linear) lags it by this much (measured,
# and checked by tests/test_echo.py): a frame's microphone under its linear output
LINEAR_DELAY = 64
# AEC3's own config, where the build takes one (configurable(); docs/aec3-config.md, measured
# on bench/echo.py's component path: clipping speaker, RT60 0.3 s, 100 ppm drift, 40 dB SNR;
# the stock wheel's defaults gave double-talk correlation 0.77 at 0 dB, 2 false barge-ins of
# 84, AEC3 7.4 ms CPU per audio-second). Each field:
AEC3_CONFIG: dict[str, bool | int | float] = {
    # FarEnd's timeline + the Aligner already align the far end: AEC3's matched-filter delay
    # estimator is skipped (AEC3 7.4 -> 2.6 ms per audio-second, false barge-ins 2 -> 0 of
    # 84); it then uses only the delay it is handed (stream_delay_ms, aec3_delay_ms)
    "delay.use_external_delay_estimator": True,
    # linear filters of 40 blocks (160 ms; default 13: 52 ms, shorter than the room's
    # reverberation): with the external delay the linear stage removes 19 dB of the rig's
    # echo instead of 6, so the suppressor cuts less of the user in double talk
    "filter.main.length_blocks": 40,
    "filter.shadow.length_blocks": 40,
    # the residual echo estimated from the better linear filter (ERLE caps 16/8 instead of
    # 6/1.8 dB): correlation with the near end at 0 dB 0.865 with the drift resampled away,
    # 0.78 without (0.82 / 0.87 without these two: ext_long40 / ext_long40_supp_f), ERLE
    # median/p10 32.4/23.1 dB, 0 false barge-ins of 84, 6.5 ms/s for the whole path
    "erle.max_l": 16.0,
    "erle.max_h": 8.0,
    # the linear filter's own output is kept too (EchoCanceller.linear): the suppressor takes
    # a user talking over loud echo down with it, the linear stage does not, and voice
    # barge-in weighs both (agentd/voice/barge_in.py)
    "filter.export_linear_aec_output": True,
}
AEC3_FILTER_MS = 4 * 40  # the echo AEC3_CONFIG's filter covers behind the delay handed over
# With AEC3_CONFIG, the delay handed to AEC3 (aec3_delay_ms) places the echo estimate's
# delay this far inside the filter (the envelope's delay is found to a 10 ms block; the
# room's direct path may come a block before its energy's peak) ...
AEC3_HEADROOM_MS = 40
# ... or this far where the path moved under the filter (PathWatch): the echo estimate it is
# placed by was searched on windows from before the move, and the moves seen through the rig
# were the echo coming earlier (by 10-20 ms: a backlog drop, a step). Placed by the stale
# estimate with AEC3_HEADROOM_MS, the echo sat ~10-20 ms into the filter, which then took
# 7-8 dB off it instead of 12-14 for the next 50 answers (H32; the estimate, flickering
# between two blocks, never asked twice in a row for the filter to move).
PATH_HEADROOM_MS = 70
# ... and is handed again only when the echo has moved outside this part of the filter
# (ms into it): a direct path before the filter's start is not cancelled at all, and the
# rig's echo moves earlier by 20 ms at each backlog it drops (a loaded machine); moved with
# the echo, the filter AEC3 has learned still fits it. Between the two it is left alone:
# the estimate's 10 ms jitter would shift the far end under the filter for nothing. With
# 10 ms, in two of four recorded runs through the rig (bench/echo.py --e2e --features) the
# echo sat 10 ms into the filter after the rig dropped backlog, and the linear filter took
# ~10 dB off it for the rest of the run (minutes; 18-21 dB before) and the answer after 80
# barge-ins cut itself in one; in the two where it sat 22 and 32 ms in, it was back to
# 16-21 dB within 3-6 answers.
AEC3_WITHIN_MS = (20, 100)
# A new delay is handed over only when two of the echo estimate's searches in a row (1 s of
# far-end sound apart) ask for it, within this: a lone search found 0.1 s or more in the
# plain room (a match of something else), and the echo, at 20 ms, fell before the filter
AEC3_AGREE_MS = 20
# The echo estimate jumped: the mean of its newest two searches (within a block of each other)
# is JUMP_BLOCKS or more from the mean of the JUMP_SEARCHES before them (the echo path moved at
# once: a USB card's or the rig's buffer dropped backlog; a block's flicker and the clocks'
# slow drift do not add up to it). AEC3 is then handed the delay afresh, inside
# AEC3_WITHIN_MS too: a new delay resets its filters (webrtc's Subtractor on any delay
# change), where a filter learned for the old path only re-adapted. Through the rig, with
# the echo moved 20-30 ms within the filter, its linear output sat ~10-13 dB under the echo
# expected for the rest of three runs (minutes; 18-21 dB before); with 60 ms, handed again
# (reset), it was back to 16-21 dB within 3-6 answers.
JUMP_BLOCKS = 1.5
JUMP_SEARCHES = 6
# ... unless AEC3's linear filter still removes the echo: the median of what it took off the
# microphone (dB) over the newest FIT_FRAMES frames with loud echo (PATH_ECHO_DB) is
# JUMP_FIT_DB or more (at least FIT_MIN of them since AEC3 was last handed a delay). The
# echo estimate's envelopes matched a phrase 40 ms off the echo twice in a row (r 0.78-0.83)
# in one of the component path's three rooms (bench/echo.py --slips): AEC3, handed that
# delay, reset a filter that took a median 15 dB off, and placed the echo 2-12 ms into the
# new one, where it never fitted again (answers cut for a minute). The jumps handed for an
# echo that had moved came with the filter taking 2.5-6 dB off; a converged one takes a
# median 17-19 dB off, 12-17 for the lowest quarter of its seconds.
JUMP_FIT_DB = 10.0
FIT_FRAMES = 50
FIT_MIN = 25
# The echo path moved under AEC3's linear filter (PathWatch): PATH_N of the last PATH_M frames
# with an echo expected of at least PATH_ECHO_DB and the microphone at least PATH_RAW_DB
# (dBFS) had the linear output within PATH_DB of the microphone, and the microphone less
# than PATH_OVER_DB over the echo expected (dB)
PATH_DB = 2.0
PATH_OVER_DB = -1.0
PATH_ECHO_DB = -35.0
PATH_RAW_DB = -45.0
PATH_N = 6
PATH_M = 8
PATH_ARM_DB = 10.0  # ... once the filter has taken this much off such frames (rig: 10-17)
# The echo slipped under AEC3's linear filter (SlipWatch): a frame of a confirmed answer
# whose microphone the linear filter takes less than SLIP_LOW_DB off is matched against the
# filter's own echo estimate (microphone less linear output), both pre-emphasised
# (SLIP_EMPH), at lags up to SLIP_MAX samples either way (the frames before it kept for
# that, and SLIP_WARM more microphone to start the high-pass filter on); its best lag, SLIP_R
# or more and SLIP_GAIN over lag 0, at least 2 samples off it and SLIP_EDGE inside the reach
# (a peak at the edge may lie beyond it: PathWatch's), is that echo moved (the frame is no
# user's), and a second such frame within SLIP_WITHIN samples, within SLIP_AGREE of it,
# moves the far end with it
SLIP_LOW_DB = 6.0
# It judges frames quieter than PathWatch's: an echo expected of at least SLIP_ECHO_DB and a
# microphone of SLIP_RAW_DB (dBFS). At a phrase's onset after a slip AEC3's filter adapts to
# the slipped echo at once: its echo estimate correlated 0.95, 0.30 and -0.53 with the
# unslipped one's in the onset's first three frames, so the frames it still matches on are
# the onset's first, quiet ones (the echo expected -41 dBFS in that one). On --slips, at 16 /
# 48 / 80 / 160 / 320 samples, PathWatch's levels (-35 / -45) cut 5 / 3 / 3 / 5 / 6 of 60,
# these 0 / 2 / 2 / 2 / 2 (-40 / -50: 3 / 1 / 1 / 5 / 3; -50 / -55: 0 / 1 / 6 / 3 / 3)
SLIP_ECHO_DB = -45.0
SLIP_RAW_DB = -50.0
SLIP_MAX = 480
SLIP_WARM = 160
SLIP_EDGE = 48
SLIP_EMPH = 0.95
SLIP_R = 0.5
SLIP_GAIN = 0.15
SLIP_AGREE = 2
SLIP_WITHIN = 3200
EXTRA = "pip install 'agentd[aec]'"
# The far end's drift compensation is changed only by this much or more (ppm): ±10 ppm off
# still gave double-talk correlation 0.84-0.85 against 0.865 (docs/aec3-config.md)
RESTEP_PPM = 3.0


class EchoUnavailable(RuntimeError):
    """The optional library is missing: the config asked for what the device cannot do."""


def library() -> Any:
    """The native module, or :class:`EchoUnavailable` saying how to install it."""
    try:
        import pywebrtc_audio
    except ImportError as exc:
        raise EchoUnavailable(
            f"needs the WebRTC audio processing library (pywebrtc-audio): {EXTRA}"
        ) from exc
    return pywebrtc_audio


def available() -> bool:
    try:
        library()
    except EchoUnavailable:
        return False
    return True


def configurable(lib: Any) -> bool:
    """The build takes AEC3's own config (``EchoCanceller(..., config={"dotted.field": v})``,
    agentd's patch of pywebrtc-audio); the stock wheel has no such argument."""
    try:
        lib.EchoCanceller(VAD_RATE, 1, 0, config={})
    except TypeError:
        return False
    return True


def exports_linear(lib: Any) -> bool:
    """The build also hands out AEC3's linear filter output (``.linear()``, agentd's patch
    since issue 22's linear barge-in): an older agentd build, not yet rebuilt by
    scripts/install, runs AEC3_CONFIG without it, and voice barge-in without it."""
    return configurable(lib) and hasattr(lib.EchoCanceller, "linear")


def aec3(lib: Any) -> Any:
    """The native AEC3 as the daemon makes it: AEC3_CONFIG where the build takes it (then
    handed the echo's delay, :func:`aec3_delay_ms`; the linear output asked for where the
    build has it), the stock wheel as it comes."""
    if exports_linear(lib):
        return lib.EchoCanceller(VAD_RATE, 1, 0, config=AEC3_CONFIG)
    if configurable(lib):
        config = {k: v for k, v in AEC3_CONFIG.items() if k != "filter.export_linear_aec_output"}
        return lib.EchoCanceller(VAD_RATE, 1, 0, config=config)
    return lib.EchoCanceller(VAD_RATE, 1)


def jumped(found: Sequence[int]) -> bool:
    """The echo estimate's delays found by its latest searches (blocks, oldest first) say the
    echo path moved at once (JUMP_BLOCKS, JUMP_SEARCHES)."""
    if len(found) < JUMP_SEARCHES + 2:
        return False
    *before, a, b = list(found)[-JUMP_SEARCHES - 2 :]
    return abs(a - b) <= 1 and abs((a + b) / 2 - sum(before) / len(before)) >= JUMP_BLOCKS


def echo_ms(echo_delay: int) -> int:
    """The echo estimate's delay (``echo_delay`` 10 ms blocks) in whole ms."""
    return echo_delay * BLOCK * 1000 // VAD_RATE


@dataclass
class PathWatch:
    """Says when the echo path moved under AEC3's linear filter, frame by frame (pure).

    Why: the echo path rig drops 20 ms of backlog when the machine is loaded (a USB card or
    a sound server can do the same), and when the echo stays inside the filter no search of
    the echo estimate sees it in time (a talker in its window). The filter's echo estimate
    is then no longer where the echo is: it takes ~nothing off the microphone, the
    suppressor, trusting it, lets the echo through, voiced, and the answer cut itself 0.3 s
    later (three runs of bench/echo.py --e2e in a row, H24-H26). With nobody talking a
    frame's microphone (under the output: AEC3's lags by AEC_DELAY) is then no louder than
    the echo expected and the linear output within PATH_DB of it; a user adds to the
    microphone (at 0 dB or more: above the echo expected) or, quieter, is what the working
    filter leaves (the linear output 5-10 dB under the microphone at -5/-10 dB). Replayed on
    the frames H25 and H26 recorded (their raw microphone, tests/echo_scenes.py), PATH_N of
    the last PATH_M frames with such echo found two of their three answers that cut
    themselves 0.16 and 0.2 s before they did (in the third, quiet frames broke the run),
    and no talker's frames in 157 trials. A filter that still takes 3-5 dB off (H28's
    warm-up cut) is not told from a user at 0 to -5 dB."""

    # the newest PATH_M frames in a row with echo: (microphone, linear output, no user and
    # no removal)
    recent: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=PATH_M))
    # the filter has shown it removes the echo (PATH_ARM_DB over PATH_M such frames): only a
    # filter that fitted the path can lose it (a fresh one, learning, removes little too)
    armed: bool = False

    def loud(self, echo: float) -> bool:
        """A frame with the echo expected ``echo`` is judged (:meth:`frame`): the caller
        works out its levels only then. One that is not breaks the run."""
        if db(echo) < PATH_ECHO_DB:
            self.recent.clear()
            return False
        return True

    def frame(self, raw: float, linear: float, echo: float) -> bool:
        """One frame's microphone under the output and linear output (mean square, full
        scale 1) and the echo expected in it: True once the path moved (then disarmed)."""
        raw_db = db(raw)
        if not self.loud(echo) or raw_db < PATH_RAW_DB:
            # no loud echo to remove, or silence: says nothing, and the frames before it
            # say nothing of the next (a user talking on through the answer's pause, its
            # echo rising after it, is all the microphone holds, the filter removes little)
            self.recent.clear()
            return False
        low = raw_db - db(linear) < PATH_DB and raw_db < db(echo) + PATH_OVER_DB
        self.recent.append((raw, linear, low))
        if len(self.recent) < PATH_M:
            return False
        if not self.armed:
            heard, left, _ = (sum(v) for v in zip(*self.recent, strict=True))
            self.armed = db(heard) - db(left) >= PATH_ARM_DB
            return False
        if sum(v[2] for v in self.recent) >= PATH_N:
            self.reset()
            return True
        return False

    def reset(self) -> None:
        """A new filter (AEC3 handed a delay: its filters reset): it shows itself anew."""
        self.recent.clear()
        self.armed = False


class SlipWatch:
    """Says when the echo slipped under AEC3's linear filter (up to 27 ms), and by how much
    (pure).

    Why: a move of the echo path by a fraction of a millisecond or a few (a sound server's
    rewind, a card restarted, the daemon held up: 7-18 ms in the PulseAudio room,
    bench/stall_slips.py; the echo path rig drops 20 ms of backlog) leaves the filter off the
    echo: it then takes next to nothing off it (1-3 dB at 4 samples, 0.25 ms), while the
    suppressor, trusting the ERLE it measured before (AEC3 updates it only on a converged
    filter), lets the echo through voiced, and voice barge-in took it for a user: 12, 19 and
    18 of 20 echo-only answers cut themselves at a slip of 4, 8 and 16 samples in a pause
    (bench/echo.py --slips), each at the phrase after the slip: the onset leak of the
    end-to-end runs. The filter's echo estimate is the echo as it was: the microphone matches
    it at the lag the echo moved by (a user does not match it; a user over a working filter
    matches it at lag 0). Moving the far end by that lag makes the learned filter fit again
    at once, where re-learning (PathWatch: AEC3 handed its delay afresh) leaks for ~1 s.

    How it matches (measured on --slips, three rooms, 60 answers per size): pre-emphasised,
    as speech's low tones match at lag 0 nearly as well as half a millisecond off (r 0.79
    against 0.87 in one such frame: 8-sample slips cut 7 of 60 without it, 0 with it); each
    lag's correlation over the newest frame whole, against the estimate or the microphone
    before it (the frame alone reached 5 ms, and its far lags were weighed down by their
    short overlap); a second match within SLIP_WITHIN agrees (in a row only, quiet frames
    between two matches lost it). Up to 27 ms (SLIP_MAX less SLIP_EDGE): before, 48-320 samples cut
    19 / 17 / 28 / 35 of 60; with it 4 / 3 / 12 / 8."""

    def __init__(self) -> None:
        self.last: int | None = None  # the lag the previous matched frame found (None: none)
        # the microphone (LINEAR_DELAY past the linear output's newest sample) and the linear
        # output of the frames AEC3 processed last, the newest last: SLIP_MAX of the past to
        # match the newest frame against, and SLIP_WARM more microphone (the high-pass
        # filter's start)
        self._mic = np.zeros(0, np.float32)
        self._linear = np.zeros(0, np.float32)
        self._n = 0  # the newest frame's length
        self._since = 0  # samples since the last match

    def heard(self, near: np.ndarray, linear: np.ndarray | None) -> None:
        """Each frame of microphone the canceller took, and its linear output (None: AEC3
        did not process it, the past is lost)."""
        if linear is None:
            self.forget()
            return
        self._n = linear.size
        self._since += self._n
        if self._since > SLIP_WITHIN:
            self.last = None
        keep = SLIP_MAX + self._n
        self._mic = np.concatenate((self._mic, near))[-(keep + SLIP_WARM + LINEAR_DELAY) :]
        self._linear = np.concatenate((self._linear, linear))[-keep:]

    def forget(self) -> None:
        """AEC3 skipped frames: the past is lost."""
        self._mic, self._linear, self._n, self.last = self._mic[:0], self._linear[:0], 0, None

    def frame(self) -> tuple[bool, int]:
        """The newest frame heard, one whose echo the filter removes little of (the
        caller's test): whether it is the echo moved, and the lag (samples) to move the far
        end by now (0: not yet)."""
        n = self._n
        reach = min(SLIP_MAX, self._linear.size - n, self._mic.size - n - LINEAR_DELAY - SLIP_WARM)
        if n == 0 or reach < 2:
            self.last = None
            return False, 0
        size = 1 << self._mic.size.bit_length()
        # the microphone as AEC3 has it (high-passed before the canceller) and the filter's
        # echo estimate, the part of it the linear output is not
        heard = np.fft.irfft(np.fft.rfft(self._mic, size) * _hpf_response(size), size)
        end = self._mic.size - LINEAR_DELAY
        x = heard[end - n - reach : end]
        echo = x - self._linear[-(n + reach) :]
        # pre-emphasised: speech's low tones match at lag 0 nearly as well as at a lag of
        # half a millisecond, its upper ones do not
        x, echo = x[1:] - SLIP_EMPH * x[:-1], echo[1:] - SLIP_EMPH * echo[:-1]
        reach -= 1
        xn, en = x[-n:], echo[-n:]
        # the newest frame's microphone against the estimate up to ``reach`` before it (the
        # echo came later), and its estimate against the microphone before it (earlier)
        later = np.correlate(echo, xn, "valid")[::-1]  # lag 0..reach
        earlier = np.correlate(x, en, "valid")[::-1]
        e2 = np.concatenate(([0.0], np.cumsum(echo * echo)))
        x2 = np.concatenate(([0.0], np.cumsum(x * x)))
        k = np.arange(reach + 1)
        tiny = 1e-9
        later = later / (np.sqrt(float(xn @ xn) * (e2[-1 - k] - e2[-1 - k - n])) + tiny)
        earlier = earlier / (np.sqrt(float(en @ en) * (x2[-1 - k] - x2[-1 - k - n])) + tiny)
        c = np.concatenate((earlier[:0:-1], later))  # lags -reach..reach
        best = int(np.argmax(c))
        lag, r, r0 = best - reach, float(c[best]), float(c[reach])
        if abs(lag) < 2 or abs(lag) > reach - SLIP_EDGE or r < SLIP_R or r - r0 < SLIP_GAIN:
            return False, 0
        last, self.last, self._since = self.last, lag, 0
        if last is None or abs(lag - last) > SLIP_AGREE:
            return True, 0
        self.last = None
        return True, lag


# webrtc's capture high-pass filter, which pywebrtc-audio's EchoCanceller runs before AEC3
# (butter(2, 100/8000, 'high') at 16 kHz): its linear output is the microphone through it
# less the filter's echo estimate
HPF_B = (0.97261, -1.94523, 0.97261)
HPF_A = (1.0, -1.94448, 0.94598)


@functools.cache
def _hpf_response(size: int) -> np.ndarray:
    """The capture high-pass filter's response on an rfft of ``size`` points."""
    z = np.exp(-1j * np.pi * np.arange(size // 2 + 1) / (size // 2))
    return np.polyval(HPF_B[::-1], z) / np.polyval(HPF_A[::-1], z)


def aec3_delay_ms(echo_delay: int | None, current: int) -> int:
    """The delay (ms) to hand AEC3_CONFIG's AEC3 (its own estimator is off) given the echo
    estimate's delay behind the reference (``echo_delay`` 10 ms blocks, None: not found) and
    the delay handed now: where the Aligner keeps the echo (TARGET_S) it is 0; a bulk delay
    beyond the Aligner's reach (the echo-path rig: its output buffer) is handed over, less
    AEC3_HEADROOM_MS, in AEC3's 4 ms steps, so the echo lands inside the 160 ms filter; it
    is handed again once the echo is outside AEC3_WITHIN_MS of the filter."""
    if echo_delay is None:
        return current
    ms = echo_ms(echo_delay)
    if AEC3_WITHIN_MS[0] <= ms - current <= AEC3_WITHIN_MS[1]:
        return current
    return aec3_place_ms(echo_delay)


def aec3_inside(echo_delay: int, current: int) -> bool:
    """An echo ``echo_delay`` blocks behind its reference lies inside the filter of an AEC3
    handed ``current`` ms (AEC3_FILTER_MS): a new delay for it can wait for the gap between
    answers (EchoCanceller._deferred)."""
    return 0 <= echo_ms(echo_delay) - current < AEC3_FILTER_MS


def aec3_place_ms(echo_delay: int, headroom: int = AEC3_HEADROOM_MS) -> int:
    """The delay (ms) that places an echo ``echo_delay`` blocks behind its reference
    ``headroom`` ms into AEC3's filter, in its 4 ms steps (0: where the Aligner keeps it)."""
    return max(0, echo_ms(echo_delay) - headroom) // 4 * 4


@dataclass(frozen=True, slots=True)
class EchoSetup:
    """What the microphone path does: ``aec`` (echo.mode), ``noise_suppression`` (0 off,
    1..4 = 6/12/18/21 dB), ``auto_gain`` (0 off, else the most gain in dB)."""

    aec: bool = False
    noise_suppression: int = 0
    auto_gain: int = 0

    @property
    def active(self) -> bool:
        return self.aec or self.noise_suppression > 0 or self.auto_gain > 0

    @classmethod
    def of(cls, echo: EchoSettings, mic: InputSettings) -> EchoSetup:
        """From the keys it reads: ``echo.mode``, ``audio.input.noise_suppression``/``auto_gain``."""
        return cls(echo.mode == "aec", mic.noise_suppression, mic.auto_gain)


class FarEnd:
    """The speaker's signal as written to ALSA, at 16 kHz, on a timeline: each sample is
    placed at the moment it leaves the card's buffer, and each microphone frame takes the
    far end due at its own capture time (plus LEAD_S). Written by the playback thread, read
    on the loop.

    Why a timeline and not a queue (measured in the real daemon, issue 22): a queue pairs
    far and near by sample count from wherever the previous answer left them, so the echo's
    delay behind its reference changed from answer to answer (-6 to +31 ms in the plain
    room); a negative one (the reference after its echo) cannot be cancelled, and the echo
    leaked at -17 dBFS and cut the answer. On a timeline the delay is the sound path's own
    (the same for every answer), whatever the bursts, gaps and batches on either side.
    """

    def __init__(self, lead_s: float = LEAD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.lead_s = lead_s
        self.clock = clock
        self._lock = threading.Lock()
        self._chunks: deque[tuple[float, np.ndarray]] = deque()  # (time of [0], 16 kHz)
        self._held = 0
        self._rs: StreamResampler | None = None
        self._t0 = 0.0  # the current stream's first sample leaves the speaker then
        self._out = 0  # 16 kHz samples of the current stream so far
        self._silent = 0  # card samples of digital silence written in a row (this stream)
        self._skipped = 0  # ... of them not handed to the resampler
        self._next: float | None = None  # where the stream's next card sample is due
        self._mic: float | None = None  # smoothed capture time of the next microphone sample
        self._far_end = -math.inf  # the newest far-end sample is due until then
        self._mic_err = 0.0  # the capture timestamps' mean offset from it (seconds)
        self._mic_n = 0  # capture timestamps averaged into that
        self.written_samples = 0  # 16 kHz samples tapped so far (for tests and status)
        self.streams = 0  # playback (re)starts: each may come out with its own delay
        self.offset = 0.0  # the reference is placed this much later (the aligner's say)
        # The sound server's latency differs by how a stream starts (from silence, or again
        # after running dry mid-answer, ~20 ms apart in PulseAudio), the same each time:
        # the offset the aligner found early in a stream of each kind is where the next
        # stream of that kind starts.
        self.kind = "idle"
        self.learned: dict[str, float] = {}
        self.started_at = 0.0  # the current stream's first sample leaves the speaker then
        # ... and its first sound (not silence: a continuous stream, echo.mode aec, starts
        # with silence and may run for hours): the stream's delay can be measured from then
        self.sounded_at: float | None = None
        # Answers: sound after ANSWER_GAP_S of silence (or a new stream) starts one; epoch
        # counts them, each proven anew (Aligner), and answer_at is its first sound.
        self.epoch = 0
        self.answer_at: float | None = None
        self._sound_until = -math.inf  # the newest far-end sample with sound ends then
        # The clocks' drift (issue 22, agentd/audio/drift.py): with ``compensate`` set, the
        # far end is resampled to 16 kHz·(1 + ppm·1e-6) by the drift estimated from what the
        # canceller is handed (:meth:`heard`), so the echo's delay behind it stops creeping and
        # AEC3's linear filter can hold it. Set (by :func:`make`) only where AEC3 runs agentd's
        # tuned config: AEC3's own delay estimator (the stock config) did worse with a
        # compensated far end (double-talk correlation 0.65 against 0.77).
        self.compensate = False
        self.drift = DriftEstimator()
        self.ppm = 0.0  # the far end is resampled by this drift now
        self._want = 0.0  # ... and by this from the next clean point (a new stream, a gap)
        # compensating: the exact 16 kHz position of the stream's next sample is _pos (where
        # the ratio last changed) plus _fed card samples since at the ratio. (Summed write by
        # write, a stream that ran a month on was 60 samples short by rounding, and the
        # error grows as the square of the time: placed by it, the next ratio change would
        # have stepped the far end that far.)
        self._pos = 0.0
        self._fed = 0
        self._gap = False  # compensating: in a silent gap, the resampler flushed
        self._anchors = 0  # the microphone's clock re-anchored or corrected: a step in the delay
        self._creep = 0.0  # the playback's timing (``at``) off the stream's own, followed
        self.short = 0  # takes that found part of their far end not placed yet (holes)

    def written(self, samples: np.ndarray, rate: int, at: float | None = None) -> None:
        """Playback's tap: int16 mono ``samples`` at the card ``rate`` just handed to ALSA,
        whose first sample leaves the speaker at ``at`` (monotonic; default: right after
        what was written before, or now). Audio continuing the stream stays contiguous;
        audio after a gap starts a new stream at ``at``. The timeline is the microphone's
        clock (:meth:`take`): ``at`` is placed on it by that clock's offset from the
        system's."""
        with self._lock:
            nxt, mic_err = self._next, self._mic_err
        if at is not None:
            at -= mic_err
        elif nxt is not None:
            at = nxt
        else:
            at = self.clock() - mic_err
        late = 0.0 if nxt is None else at - nxt
        beyond = late - self._creep  # later than the creep followed: a gap
        new = (
            self._rs is None
            or self._rs.in_rate != rate
            or nxt is None
            or beyond > REANCHOR_S  # a gap: the speaker ran dry
        )  # (sooner than the stream's own timing is the estimate's noise, or a device that
        # is not paced: it stays contiguous)
        if new:
            if self._rs is not None and not self._gap:  # the last stream's tail, where it belongs
                self._put(self._rs.process_pcm(np.zeros(0, np.int16), last=True))
            self.streams += 1
            with self._lock:
                idle = nxt is None or beyond > IDLE_GAP_S
                self.kind = "idle" if idle else "restart"
                # a kind not learned yet starts where the last stream was
                self.offset = self.learned.setdefault(self.kind, self.offset)
                self.started_at, self.sounded_at, self.answer_at = at, None, None
                self.epoch += 1  # unconfirmed from its start, before its first sound
            self.ppm = self._want if self.compensate else 0.0
            self._rs = self._resampler(rate)
            self._t0, self._out, self._silent, self._skipped = at, 0, 0, 0
            self._pos, self._fed, self._gap, self._creep = 0.0, 0, False, 0.0
            nxt = at
        else:  # the card's clock creeping off the system's: followed, slowly
            most = CREEP_PPM * 1e-6 * samples.size / rate
            self._creep += max(-most, min(most, beyond))
        assert self._rs is not None and nxt is not None
        self._silent = 0 if np.count_nonzero(samples) else self._silent + samples.size
        if self.compensate:
            self._compensated(samples, rate)
        elif self._silent - samples.size >= SKIP_SILENT_S * rate:
            # the resampler has been fed silence longer than it holds back: its output for
            # more silence is zeros, placed here without it (a continuous stream writes
            # silence between answers for hours); the zeros it still holds come out before
            # the next sound, which so lands where it belongs. Skipped in whole periods of
            # the rate ratio (3 samples at 48 kHz, 441 at 44.1), so the resampler's phase,
            # and the sound after, stays sample for sample what it would have been.
            period = rate // math.gcd(rate, VAD_RATE)
            m = (self._skipped + samples.size) // period * period - self._skipped
            self._skipped += m
            if m < samples.size:
                self._put(self._rs.process_pcm(samples[m:]))
            self._put(np.zeros(m * VAD_RATE // rate, np.int16))
        else:
            self._put(self._rs.process_pcm(samples))
        with self._lock:
            self._next = nxt + samples.size / rate

    def _resampler(self, rate: int) -> StreamResampler:
        """48 -> 16 kHz·(1 + ppm): soxr MQ; at 16 kHz in (the component benches) its steady
        engine (the fixed-rate one held back 58 ms at such a ratio, as much as the writer's
        lead)."""
        out = VAD_RATE * (1 + self.ppm * 1e-6)
        return StreamResampler(rate, out, quality="MQ", steady=rate == VAD_RATE and out != rate)

    def _compensated(self, samples: np.ndarray, rate: int) -> None:
        """The stream's next card samples at the drift's ratio, through one resampler, the
        silence between phrases too. The ratio changes only where the resampler restarts: at
        a new stream, or here at the first sound after a silent gap (SKIP_SILENT_S) once a
        new ratio is due: the old one is flushed as the gap begins (what it holds is that
        silence) and the new one starts at the exact position the ratio gives, so nothing
        that sounds is cut or moved (±0.5 sample), and the stream's timing goes on. In that
        gap zeros are placed without a resampler (counted at the ratio).

        Why not restart at every gap (and skip the silence): a restart places the sound
        after it only to ±0.5 sample, which AEC3's linear filter, fitted to the phrase before,
        must re-learn above ~1 kHz (a scratch replay of noise in phrases: each phrase off an
        unbroken resampling by 2-36 dB less than its own level; now 36-38, the MQ/VHQ floor;
        through the rig the onsets' removal moved little, p10 9.1-9.6 dB against 7.6-10.7).
        Feeding the silence through costs the tap 0.4 ms per audio-second of silence
        (0.45 -> 0.87 ms timing FarEnd alone), 0.04% of a core."""
        assert self._rs is not None
        # a gap begins only where a new ratio is due: else the silence goes through
        gap = self._silent - samples.size >= SKIP_SILENT_S * rate and (
            self._gap or self._want != self.ppm
        )
        if gap and not self._gap:  # the resampler's tail is this silence: out with it
            self._put(self._rs.process_pcm(np.zeros(0, np.int16), last=True))
            self._gap = True
        elif not gap and self._gap:  # sound after the gap: the clean point for a new ratio
            self._gap = False
            self._pos, self._fed = self._position(rate), 0
            self.ppm = self._want
            self._rs = self._resampler(rate)
            if round(self._pos) > self._out:  # (the flushed tail came out short)
                self._put(np.zeros(round(self._pos) - self._out, np.int16))
        self._fed += samples.size
        if self._gap:
            self._put(np.zeros(max(0, round(self._position(rate)) - self._out), np.int16))
            return
        self._put(self._rs.process_pcm(samples))

    def _position(self, rate: int) -> float:
        """Compensating: the exact 16 kHz position of the stream's next sample."""
        return self._pos + self._fed * VAD_RATE * (1 + self.ppm * 1e-6) / rate

    def heard(self, near: np.ndarray, far: np.ndarray) -> None:
        """One frame as the canceller is handed it: the raw microphone and the far end
        :meth:`take` gave for it. With ``compensate``, the drift estimated from them is
        applied at the next clean point (:meth:`_compensated`); the estimator measures the
        residual and adds the drift applied (each change of the timeline a new segment)."""
        if not self.compensate:
            return
        key: tuple[int, float, int, float] | None
        if self.drift.running:
            with self._lock:
                # (a new ratio is a new resampler: its output may start a sample or so off)
                key = (self.streams, self.offset, self._anchors, self.ppm)
                applied = self.ppm
        else:  # asleep (sure) it counts only the ppm applied: no key built, no lock taken
            key, applied = None, self.ppm
        est = self.drift.feed(far, near, key, applied)
        # (a change under RESTEP_PPM is the estimate's noise: not worth a restart, ±0.5 sample)
        if est is not None and abs(est - self._want) >= RESTEP_PPM:
            self._want = est

    def _put(self, x: np.ndarray) -> None:
        """Place the current stream's next resampled samples (int16)."""
        t = self._t0 + self._out / VAD_RATE
        self._out += x.size
        if not x.size:
            return
        sound = _sounding(x)
        with self._lock:
            if sound is not None:
                first = t + sound[0] / VAD_RATE
                if self.sounded_at is None:
                    self.sounded_at = first
                if self.answer_at is None or first - self._sound_until >= ANSWER_GAP_S:
                    self.epoch += 1
                    self.answer_at = first
                self._sound_until = t + (sound[1] + 1) / VAD_RATE
            self._chunks.append((t, x))
            self._far_end = t + x.size / VAD_RATE
            self._held += x.size
            self.written_samples += x.size
            while self._held > FAR_KEEP_S * VAD_RATE and len(self._chunks) > 1:
                self._held -= self._chunks.popleft()[1].size

    def starved(self) -> None:
        """Playback's device played all it held and ran on (continuous mode's thread came
        late): what plays next comes after a gap the timeline does not show, or, where a
        sound server rewinds to hide it, replayed out of order (the PulseAudio room's
        monitor: tests/test_faults.py). Either way the echo moved under AEC3, which leaked it
        whole (the real daemon cut an answer 100 ms after such an underrun in the plain
        room): the next sound starts an answer, which proves its delay again."""
        with self._lock:
            self.answer_at = None

    def dropped(self, at: float | None = None) -> None:
        """Playback dropped what ALSA held at ``at`` (a flush, a device fault): from there
        on it never plays."""
        at = self.clock() if at is None else at
        with self._lock:
            at -= self._mic_err  # (on the microphone's clock, as the timeline is)
        # what the resampler still holds back never played either: flushed into the next
        # stream it would land at the old stream's end, ahead of the new stream's audio on
        # the timeline, and take() (which stops at the first chunk not yet due) would hand
        # the canceller zeros for the new answer's echo
        self._rs = None
        with self._lock:
            self._next = None
            while self._chunks:
                t, x = self._chunks[-1]
                keep = max(0, round((at - t) * VAD_RATE))
                if keep >= x.size:
                    break
                self._chunks.pop()
                self._held -= x.size - keep
                if keep:
                    self._chunks.append((t, x[:keep]))
                    break

    def take(self, n: int, at: float | None = None) -> np.ndarray:
        """The far end due during the ``n`` microphone samples captured from ``at`` on
        (monotonic; default: right after the previous frame), zeros where nothing played.
        The microphone's clock counts samples, anchored by the averaged capture timestamps,
        its offset from them followed (MIC_FOLLOW_BLOCKS); a jump beyond that offset (frames
        lost) re-anchors it, the offset kept (the far end is placed by it)."""
        with self._lock:
            mic = self._mic
            if at is not None:
                if mic is None:
                    mic, self._mic_err, self._mic_n = at, 0.0, 0
                    self._anchors += 1
                elif abs(at - mic - self._mic_err) > MIC_JUMP_S:
                    mic = at - self._mic_err
                    self._anchors += 1
                else:  # a running mean of the timestamps' error, then a slow follower,
                    k = max(1, n // BLOCK)  # counted in 10 ms blocks (a frame is k of them)
                    self._mic_n += k
                    self._mic_err += (at - mic - self._mic_err) * min(
                        1.0, k / min(self._mic_n, MIC_FOLLOW_BLOCKS)
                    )
                    if mic > self._far_end + IDLE_S:  # corrected only while nothing plays
                        if abs(self._mic_err) * VAD_RATE > 0.1:  # (a step for the drift)
                            self._anchors += 1
                        mic, self._mic_err = mic + self._mic_err, 0.0
            elif mic is None:
                mic = self.clock()
            if self._owed_locked(mic, n):
                self.short += 1
            self._mic = mic + n / VAD_RATE
            start = mic + self.lead_s - self.offset
            out = np.zeros(n, np.int16)
            chunks = self._chunks
            for t, x in chunks:  # (conditionals, not min/max calls: once per chunk a frame)
                i = round((t - start) * VAD_RATE)
                if i >= n:
                    break
                a = -i if i < 0 else 0
                b = x.size if x.size < n - i else n - i
                if a < b:
                    out[i + a : i + b] = x[a:b]
            end = start + n / VAD_RATE
            while chunks and chunks[0][0] + chunks[0][1].size / VAD_RATE <= end:
                self._held -= chunks.popleft()[1].size
        return out

    def owed_s(self, n: int) -> float:
        """How long the next take of ``n`` samples must wait for its far end to be placed
        (seconds): 0 when it is all there, or when more than HOLD_MAX_S is missing (nothing
        is being written: the device stopped, or no stream began)."""
        with self._lock:
            return 0.0 if self._mic is None else self._owed_locked(self._mic, n)

    def _owed_locked(self, mic: float, n: int) -> float:
        """What :meth:`owed_s` says of a take of ``n`` samples from ``mic`` (under ``_lock``)."""
        owed = mic + n / VAD_RATE + self.lead_s - self.offset - self._far_end
        # (under half a sample is not a hole, take places to the nearest sample: it is the
        # float sums' noise, 1e-11 s at a monotonic clock of days, which held frames for it)
        return owed if OWED_MIN_S < owed < HOLD_MAX_S else 0.0

    def move(self, by: float) -> None:
        """The aligner's say: place the reference ``by`` seconds later from now on (and,
        early in a stream, for the next stream of its kind)."""
        with self._lock:
            self.offset += by
            if self._mic is not None and self._mic - (self.sounded_at or self._mic) < LEARN_S:
                self.learned[self.kind] = self.offset

    def recent(self) -> np.ndarray:
        """What is held, in the order it was written (for tests and diagnostics)."""
        with self._lock:
            return np.concatenate([x for _, x in self._chunks] or [np.zeros(0, np.int16)])

    @property
    def held(self) -> int:
        """16 kHz samples written and not yet due at the microphone."""
        with self._lock:
            return self._held


def _sounding(x: np.ndarray) -> tuple[int, int] | None:
    """The first and last nonzero sample's index, or None (digital silence). A chunk of
    speech mostly starts and ends with sound, which needs no search (flatnonzero costs the
    far-end tap 3-4 µs a chunk)."""
    if x[0] and x[-1]:
        return 0, x.size - 1
    nz = np.flatnonzero(x)
    return (int(nz[0]), int(nz[-1])) if nz.size else None


@dataclass(slots=True)
class TwoInARow:
    """A change one measurement asks for is made only when the next one asks for it too
    (within ``tol``): a lone one is a match of something else. Why, in both its users: the
    synthetic room's reverberation gave the Aligner a lone 0.9+ match at 115 ms amid 20-40 ms
    ones, and moving on it leaked echo into every answer after it; in the plain room a lone
    search of the echo estimate found 0.1 s or more, and handing that to AEC3 put the echo
    (20 ms) before its filter. A real change (the sound server's latency jumping, the rig's
    bulk delay) shows as clearly in the next measurement too."""

    tol: float
    pending: float | None = None  # asked for by the last measurement, not acted on

    def agree(self, value: float) -> bool:
        """``value`` asked for now: True (act on it; nothing pending then) when the last
        measurement asked for the same within ``tol``, else it waits for the next."""
        pending, self.pending = self.pending, value
        if pending is None or abs(value - pending) > self.tol:
            return False
        self.pending = None
        return True

    def clear(self) -> None:
        """A measurement that asks for no change (or a change made another way): the next
        one starts afresh."""
        self.pending = None


class Aligner:
    """Keeps the echo's delay behind its reference the same, whatever the sound server does.

    Why: a sound server restarts a stream that ran dry (between answers, after a flush, an
    underrun at 1x delivery) with its own latency: in the PulseAudio room the echo came
    12.9 ms after its reference in one answer, 21 ms in another, and jumped by 18-21 ms
    mid-answer after short underruns. AEC3 re-learns such a jump over ~2 s, leaking echo at
    -25..-45 dBFS meanwhile: enough to cut the answer. So every ALIGN_S of far-end sound the
    delay is measured (FFT cross-correlation of the reference with the raw microphone) and,
    where the match is clear (echo alone), the reference is moved to keep it at TARGET_S.
    """

    def __init__(self, far: FarEnd) -> None:
        self.far = far
        # the raw 16 kHz blocks of one window: decimated once per window, not per block
        # (numpy's per-call overhead on 10 ms blocks was most of the aligner's cost)
        self._near: list[np.ndarray] = []
        self._refs: list[np.ndarray] = []
        self._held = 0  # 16 kHz samples in each
        self._sound = False  # the far end held has sound in it
        # the delays found (seconds), the newest MEASURED_KEPT, and how many so far (for
        # benches and tests; kept whole, the list grew with every clear window of every
        # answer for as long as the daemon ran: ~20 a minute of answers, up to 300)
        self.measured: deque[float] = deque(maxlen=MEASURED_KEPT)
        self.matched = 0
        self.moves = 0  # corrections made
        self._confirmed = -1  # the far end's answer (epoch) whose delay was confirmed
        self._moved_at = -math.inf  # the microphone's time of the last move
        # the answer (epoch) unconfirmed only because SlipWatch moved the far end with its
        # echo: the echo estimate holds, AEC3 re-fits (refitting)
        self._refit = -1
        self._stream = -1  # the far end's stream the gathered windows belong to
        self._epoch = -1  # the far end's answer the convergence blocks belong to
        self._erle: deque[tuple[float, float]] = deque()  # (raw, cancelled) energy per block
        self._pending = TwoInARow(ALIGN_TOL_S)  # a clear off-target lag: moved if the next agrees
        # the echo estimate: both envelopes (dBFS per 10 ms block), the echo's delay (blocks)
        # and gain (dB) behind the far end once found, the estimate for the newest block
        self._env_far: list[float] = [ECHO_FLOOR_DB] * ECHO_HIST  # (lists: a frame adds two
        self._env_near: list[float] = [ECHO_FLOOR_DB] * ECHO_HIST  # blocks, numpy costs more)
        self._env_sound = 0  # blocks with far-end sound since the last search
        self.echo_delay: int | None = None
        self.echo_gain_db = 0.0
        self.echo_r = 0.0  # the last search's match (for benches and tests)
        self.echo_found = 0  # searches that found the echo's delay and gain
        # AEC3 runs AEC3_CONFIG (no delay estimator of its own): its removing the echo
        # proves nothing until it has been handed the echo estimate's delay
        self.needs_delay = False
        self._echo_db = ECHO_FLOOR_DB
        self.echo_energy = 0.0  # mean square (full scale 1.0), the newest frame's highest
        # the far end's newest BAND_KEEP blocks (its frames as handed), for over_echo_db:
        # banded only when asked (voice barge-in asks on few frames: most are decided before)
        self._far_recent: deque[np.ndarray] = deque()
        self._far_held = 0

    def _envelope(self, near: np.ndarray, far: np.ndarray) -> list[float] | None:
        """The echo expected in this frame: the far end's envelope at the echo's delay and
        gain (until they are found: its loudest over every delay searched, 0 dB gain), held
        as the room rings on. A frame's blocks push both envelopes on; the delay and gain
        are searched again every ECHO_EVERY blocks of far-end sound. Returns the frame's
        block energies it computed (:meth:`cancelled` needs the same: computed once), or
        None while idle (the far end silent: no block for it to count)."""
        n = near.size // BLOCK
        far_env, near_env = self._env_far, self._env_near
        # idle: no echo to expect, the far end's envelope is its floor; the microphone's
        # level is kept even so (floored with the far end, its envelope stepped up with the
        # far end's first sound, and the room's noise matched that step at no delay better
        # than its echo at its own)
        idle = not self.echo_energy and not far.any()
        x = (near if idle else np.concatenate((far, near))).reshape(-1, BLOCK).astype(np.float32)
        energy: list[float] = _row_energy(x).tolist()
        # (no max() per block: a conditional costs a third of a call)
        env = [
            10 * math.log10(e * _ENV_SCALE) if e * _ENV_SCALE > _ENV_FLOOR else ECHO_FLOOR_DB
            for e in energy
        ]
        far_env += [ECHO_FLOOR_DB] * n if idle else env[:n]
        near_env += env[-n:]
        if len(far_env) >= 2 * ECHO_HIST:  # (trimmed now and then, not per frame)
            del far_env[:-ECHO_HIST], near_env[:-ECHO_HIST]
        if idle:
            return None
        for e in env[:n]:
            if e > ECHO_FLOOR_DB:
                self._env_sound += 1
        if self._env_sound >= ECHO_EVERY:
            self._env_sound = 0 if self._find_echo() else ECHO_EVERY // 2
        k = len(far_env)
        lo, hi = self._echo_lags()
        gain, echo_db, top = self.echo_gain_db, self._echo_db, ECHO_FLOOR_DB
        for j in range(k - n, k):
            src = max(far_env[j - lo : j - hi + 1]) + gain
            echo_db = src if src >= echo_db - ECHO_DECAY_DB else echo_db - ECHO_DECAY_DB
            if echo_db > top:
                top = echo_db
        self._echo_db = echo_db
        self.echo_energy = 10 ** (top / 10) if top > ECHO_FLOOR_DB else 0.0
        return energy

    def _echo_lags(self) -> tuple[int, int]:
        """The far end's blocks the echo expected is taken from, as lags behind the newest
        (longest, shortest): the echo's delay and spread, or every delay searched until it
        is found. Shared by the broadband estimate and its per-band twin (over_echo_db)."""
        d = self.echo_delay
        if d is None:
            return ECHO_MAX_LAG + ECHO_SPREAD, 0
        return d + ECHO_SPREAD, d - ECHO_SPREAD

    def _find_echo(self) -> bool:
        """The lag (blocks) at which the far end's envelope best matches the raw
        microphone's, and the gain there, if the match is clear (the echo alone). False:
        too little far-end sound to search (ECHO_MIN_SOUND)."""
        far = np.array(self._env_far[-ECHO_HIST:])
        near = np.array(self._env_near[-ECHO_HIST:])
        m = ECHO_HIST - ECHO_MAX_LAG - ECHO_SPREAD
        y = near[-m:] - near[-m:].mean()
        # row i: the far end d = ECHO_MAX_LAG + ECHO_SPREAD - i blocks before the microphone
        xs = np.lib.stride_tricks.sliding_window_view(far, m)
        xs = xs - xs.mean(axis=1, keepdims=True)
        den = np.sqrt(_row_energy(xs) * float(np.dot(y, y)))
        r = (xs @ y) / np.maximum(den, 1e-9)
        i = int(np.argmax(r))
        best, lag = float(r[i]), ECHO_MAX_LAG + ECHO_SPREAD - i
        # far-end sound in the windows the match and the delay held now compared
        sound = np.concatenate(([0], np.cumsum(far > ECHO_FLOOR_DB)))
        held = sound[m:] - sound[:-m]
        rows = (
            (i,) if self.echo_delay is None else (i, ECHO_MAX_LAG + ECHO_SPREAD - self.echo_delay)
        )
        if min(int(held[k]) for k in rows) < ECHO_MIN_SOUND:
            return False
        self.echo_r = best
        if best < ECHO_MIN_R:
            return True
        now = self.echo_delay
        if now is not None and abs(lag - now) > ECHO_MOVE_BLOCKS and best < ECHO_MOVE_R:
            return True  # far from the echo held, on a weak match: someone talked
        x = far[ECHO_HIST - m - lag : ECHO_HIST - lag]
        loud = x > x.max() - 20  # where the far end sounds: the echo over the noise
        gain = float(np.median(near[-m:][loud] - x[loud]))
        if ECHO_GAIN_DB[0] <= gain <= ECHO_GAIN_DB[1]:
            self.echo_delay, self.echo_gain_db = lag, gain
            self.echo_found += 1
        return True

    def block(self, near: np.ndarray, far: np.ndarray) -> list[float] | None:
        """The microphone's samples and the reference handed with them (int16, 16 kHz, a
        whole number of 10 ms blocks). Returns their energies per 10 ms block (the far
        end's, then the microphone's; None while the echo estimate idles) for
        :meth:`cancelled` on the same frame."""
        energy = self._envelope(near, far)
        self._align(near, far)
        recent = self._far_recent
        recent.append(far)
        self._far_held += far.size
        while self._far_held - recent[0].size >= BAND_KEEP * BLOCK:
            self._far_held -= recent.popleft().size
        return energy

    def over_echo_db(self, out: np.ndarray) -> float:
        """How far the loudest band of ``out`` (the newest frame, cancelled) is over the echo
        expected in that band (dB; -inf: no echo expected). The per-band twin of
        echo_energy, reckoned the same way (the far end's bands at the echo's delay and
        spread, its gain, the room's decay), on the far end's newest BLOCKs: a user whose
        voice has a band the answer's lacks shows there even when the suppressor takes them
        well under the echo as a whole."""
        n = out.size // BLOCK
        if not self.echo_energy or not n or self._far_held < (n + 1) * BLOCK:
            return -math.inf
        lo, hi = self._echo_lags()
        far = np.concatenate(self._far_recent)
        k = far.size // BLOCK  # the newest n blocks are the frame's
        # unrolled, E(j) = max(S(j) + gain, E(j - 1) - decay), S(j) the far end's loudest
        # over the delay's spread, is the far end's loudest block i <= j - hi, decayed for
        # each block it lies before j - lo: only blocks within BAND_TAIL of that matter
        first, end = max(0, k - n - lo - BAND_TAIL), min(k, k - hi)
        if end <= first:
            return -math.inf
        f = _band_db(far[first * BLOCK : end * BLOCK])  # (blocks, bands)
        i = np.arange(first, end)
        top = np.full(f.shape[1], ECHO_FLOOR_DB)
        for j in range(k - n, k):
            m = min(j - hi + 1, end) - first
            if m > 0:
                w = -ECHO_DECAY_DB * np.maximum(0, j - lo - i[:m])
                top = np.maximum(top, (f[:m] + w[:, None]).max(axis=0))
        # (no lower than the floor the output's bands are held at: a band silent in both
        # would read the echo's gain as "over")
        expected = np.maximum(top + self.echo_gain_db, ECHO_FLOOR_DB)
        got = _band_db(out).astype(np.float64)
        mean = 10 * np.log10(np.mean(10 ** (got / 10), axis=0))
        return float(np.max(mean - expected))

    def _align(self, near: np.ndarray, far: np.ndarray) -> None:
        """The frame into the window being gathered; a whole window is matched (_measure)
        and a clear, confirmed lag moves the reference."""
        if self._stream != self.far.streams:  # a new stream: the old one's windows say
            self._stream = self.far.streams  # nothing of its delay
            self._forget()
            self._erle.clear()
        if not self._sound and not far.any():  # nothing to match: nothing is gathered
            if self._held:
                self._forget()
            return
        self._sound = True
        self._near.append(near)
        self._refs.append(far)
        self._held += near.size
        k, lo, n = _K, _LO, _N
        w = (lo + n + _HI) * k
        if self._held < w:
            return
        x16, f16 = np.concatenate(self._near), np.concatenate(self._refs)
        # an average of k samples: crude, but a delay to the millisecond is all that is
        # asked, at a sixth of the cost of full rate
        x = x16[:w].astype(np.float32).reshape(-1, k) @ _MEAN
        f = f16[lo * k : (lo + n) * k].astype(np.float32).reshape(-1, k) @ _MEAN
        found = self._measure(x, f, lo)
        step = int(ALIGN_STEP_S * VAD_RATE)
        self._near, self._refs, self._held = [x16[step:]], [f16[step:]], x16.size - step
        self._sound = bool(self._refs[0].any())
        if found is None:  # not echo alone (someone talks, or silence)
            return
        lag, r = found
        self.measured.append(lag)
        self.matched += 1
        # only a clear match counts: in a reverberant room (the rig) spurious peaks of
        # 0.6-0.9 moved the reference and cost false barge-ins; AEC3 covers such paths
        # (the stock wheel's own estimator, or AEC3_CONFIG's 160 ms filter and the delay
        # handed to it, aec3_delay_ms)
        if r < ALIGN_SURE_R:
            self._pending.clear()
            return
        if abs(lag - TARGET_S) <= ALIGN_TOL_S:
            self._confirmed = self.far.epoch
            self._pending.clear()
            return
        # one clear match is not enough to move (TwoInARow: a lone 0.9+ peak in the synthetic
        # room cost 14 false barge-ins in tests/test_voice.py)
        if not self._pending.agree(lag):
            return
        self.moves += 1
        self.far.move(lag - TARGET_S)
        self.unconfirm()
        self._forget()  # what was gathered is placed the old way: start again

    def unconfirm(self, refit: bool = False) -> None:
        """The echo moved under AEC3 (the reference moved, or AEC3 was handed another
        delay): it leaked until now, the answer proves its delay again (or SETTLE_MAX_S).
        ``refit``: only the far end was moved with the echo (SlipWatch), the echo estimate
        holds (:attr:`refitting`)."""
        self._pending.clear()
        self._confirmed = -1
        self._refit = self.far.epoch if refit else -1
        with self.far._lock:
            self._moved_at = self.far._mic or -math.inf
        self._erle.clear()

    def _forget(self) -> None:
        """Drop the window being gathered (a new stream, a move, or silence before sound)."""
        self._near, self._refs, self._held, self._sound = [], [], 0, False

    def cancelled(self, out: np.ndarray, energy: list[float] | None) -> None:
        """The canceller's output ``out`` for the frame :meth:`block` just took, with the
        energies it returned (the far end's and the raw microphone's per 10 ms block,
        computed once for both; None: the far end was silent, no block counts): echo
        removed deeply over CONVERGED_BLOCKS of far-end sound confirms the answer's delay
        too (the rig's bulk delay is beyond the aligner's reach: the stock wheel's AEC3
        finds it itself, AEC3_CONFIG's is handed the echo estimate's, and its removal
        counts only once that is found: ``needs_delay``)."""
        epoch = self.far.epoch
        if self._epoch != epoch:  # a new answer: its own blocks only
            self._epoch = epoch
            self._erle.clear()
        if self._confirmed == epoch:  # (the common case: nothing to compute)
            return
        if self.needs_delay and self.echo_delay is None:
            # AEC3_CONFIG's AEC3 has not been handed the echo's delay yet (the echo
            # estimate has not found it): its suppressor alone removed 15 dB of a stream
            # the microphone did not hear (0.48 s, the test's unrelated stream)
            return
        if energy is None:  # the far end silent: no block of far-end sound
            return
        # the output's energies per 10 ms block, the frame's blocks at once
        o = out.astype(np.float64).reshape(-1, BLOCK)
        n = o.shape[0]
        for ef, en, eo in zip(energy[:n], energy[n:], _row_energy(o).tolist(), strict=True):
            if ef < BLOCK * ALIGN_MIN_RMS**2:
                continue
            self._erle.append((en, eo))
            if len(self._erle) > CONVERGED_BLOCKS:
                self._erle.popleft()
            if len(self._erle) == CONVERGED_BLOCKS:
                raw, left = (sum(v) for v in zip(*self._erle, strict=True))
                if raw >= 10 ** (CONVERGED_DB / 10) * max(left, 1.0):
                    self._confirmed = epoch
                    return

    @property
    def confirmed(self) -> bool:
        """The current answer's delay is proven (its echo removed deeply), not only trusted
        by time (:attr:`settled`)."""
        return self._confirmed == self.far.epoch

    @property
    def refitting(self) -> bool:
        """The answer is unsettled only because SlipWatch moved the far end with its echo:
        the echo expected still holds (its delay and gain), only AEC3 leaks while it re-fits."""
        return self._refit == self.far.epoch and not self.settled

    @property
    def settled(self) -> bool:
        far = self.far
        if self._confirmed == far.epoch:
            return True
        with far._lock:
            mic, sounded = far._mic, far.answer_at
        # unconfirmed: trusted SETTLE_MAX_S after the answer's first sound or the last move
        # (a continuous stream, echo.mode aec, may run for hours: its start says nothing)
        since = max(sounded if sounded is not None else math.inf, self._moved_at)
        return mic is None or mic - since >= SETTLE_MAX_S

    @staticmethod
    def _measure(x: np.ndarray, f: np.ndarray, lo: int) -> tuple[float, float] | None:
        """The lag (s) at which ``x`` (the microphone from ``lo`` samples before the
        reference window ``f``) best matches ``f`` and the match (normalised correlation),
        or None if it is weak."""
        n = f.size
        fe = float(np.dot(f, f))
        if (
            fe < n * (ALIGN_MIN_RMS / 2) ** 2
        ):  # (averaging lowers the level)  # the reference is near silence: nothing to match
            return None
        # c[j] for j <= x.size - n never wraps around a transform of x.size points
        size = 1 << int(np.ceil(np.log2(x.size)))
        c = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(f, size)), size)
        c = c[: x.size - n + 1]  # c[j]: x[j:j+n] against f
        cs = np.concatenate(([0.0], np.cumsum(x.astype(np.float64) ** 2)))
        e = cs[n:] - cs[:-n]
        # (a floor under the microphone's energy: where it is silent the transform's
        # rounding would divide into a "match")
        r = c / np.sqrt(np.maximum(e, n * (ALIGN_MIN_RMS / 4) ** 2) * fe)
        j = int(np.argmax(r))
        if r[j] < ALIGN_MIN_R:
            return None
        return (j - lo) / ALIGN_RATE, float(r[j])


_VECDOT = getattr(np, "vecdot", None)  # (numpy >= 2.0)


def _row_energy(x: np.ndarray) -> np.ndarray:
    """Each row's sum of squares: numpy 2's vecdot where there is one (2.6 against 4.2 µs
    for a frame's four blocks; float32 sums equal to the last bits), einsum before it."""
    if _VECDOT is not None:
        return _VECDOT(x, x)
    return np.einsum("ij,ij->i", x, x)


def _band_db(x: np.ndarray) -> np.ndarray:
    """int16 samples (whole BLOCKs) into each block's energy per band (BANDS_HZ; dBFS, mean
    square, floored at ECHO_FLOOR_DB)."""
    spectrum = np.fft.rfft(x.reshape(-1, BLOCK).astype(np.float32), axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    return 10 * np.log10(np.maximum(power @ _TO_BANDS, _ENV_FLOOR))


class EchoCanceller:
    """The microphone path's processing, created once per daemon: AEC3 against ``far``, then
    noise suppression, then automatic gain (last: gain inside the canceller's path raises the
    residual echo). Frames in and out are 16 kHz mono int16, whole multiples of 10 ms."""

    def __init__(self, setup: EchoSetup, far: FarEnd | None = None, lib: Any = None) -> None:
        """``lib``: the native module (default :func:`library`; bench/echo.py --bindings
        hands another binding behind the same calls to compare them)."""
        lib = lib or library()
        self.setup = setup
        self.far = far or FarEnd()
        self.tuned = setup.aec and configurable(lib)
        self.linear_out = setup.aec and exports_linear(lib)  # (:meth:`linear`)
        self._aec = aec3(lib) if setup.aec else None
        # The far end is resampled by the clocks' drift (FarEnd.compensate) where AEC3 runs
        # AEC3_CONFIG, and only there: AEC3_CONFIG without it let 6 of 84 echo-only answers
        # cut themselves (component path); AEC3's own delay estimator did worse with it
        # (double-talk correlation 0.65 against 0.77)
        if self.tuned:
            self.far.compensate = True
        self.stream_delay_ms = 0  # handed to AEC3 (tuned only: aec3_delay_ms)
        self._delay_seen = 0  # the echo estimate's searches looked at for it
        self._delay_pending = TwoInARow(AEC3_AGREE_MS)  # asked for by a search, not handed yet
        # A new delay for an echo that only crept to the filter's edge (the clocks' drift,
        # the estimate's flicker), inside it still, is handed once the far end has been
        # silent ANSWER_GAP_S, between answers (the next proves its delay anyway): handed at
        # once it reset AEC3's filters mid-answer, the echo leaked whole for ~2 s, and when
        # that fell in a user's speech the barge-in was lost (bench/echo.py --e2e run H18:
        # the rig's echo crept 40 ms earlier over the -10 dB trials and was handed 277 ms
        # into a talker's speech, 6 ms inside the filter; settled again only 1.8 s later,
        # the barge-in missed). An echo outside the filter, or one that jumped (JUMP_BLOCKS),
        # is handed at once: there the filter no longer fits it.
        self._deferred: int | None = None
        self.delay_moves = 0  # ... changed this often (for benches and tests)
        self.jumps = 0  # ... of which because the echo estimate jumped (for benches and tests)
        self.path_moves = 0  # the linear filter found the echo path moved under it (ditto)
        self._path = PathWatch()
        self._slip = SlipWatch()
        self.slips = 0  # the far end moved with an echo that slipped under the filter (ditto)
        self.slipped = False  # the newest frame is echo that slipped: no user's (voice barge-in)
        self._found: deque[int] = deque(maxlen=JUMP_SEARCHES + 2)  # the searches' delays
        # what the linear filter took off the microphone (dB) in the newest frames with loud
        # echo since AEC3 was last handed a delay (JUMP_FIT_DB)
        self._fit: deque[float] = deque(maxlen=FIT_FRAMES)
        self.refused = 0  # jumps of the echo estimate not handed: the filter fits (ditto)
        ns = setup.noise_suppression
        self._ns = lib.NoiseSuppressor(VAD_RATE, 1, level=ns - 1) if ns > 0 else None
        self._agc = (
            lib.GainController(VAD_RATE, 1, max_gain_db=float(setup.auto_gain))
            if setup.auto_gain > 0
            else None
        )
        self.frames = 0
        self.aligner = Aligner(self.far) if setup.aec else None
        if self.aligner is not None:
            self.aligner.needs_delay = self.tuned
        self._heard = 0  # 10 ms blocks with far-end sound processed: how much it has learned
        self._quiet = 0  # samples since the far end last had sound
        self._idle = False  # the canceller is bypassed (IDLE_AEC_S of silent far end)
        # the last 10 ms of the frame before the newest (what a bypass leaves AEC3)
        self._tail = np.zeros(BLOCK, np.int16)
        self._linear = False  # AEC3 processed the newest frame: its linear output is the frame's
        self._linear_frame: np.ndarray | None = None  # ... once asked for (linear())
        self.bypassed = 0  # frames not handed to the canceller (for benches and tests)

    @property
    def settled(self) -> bool:
        """The echo's delay behind the reference is confirmed for the current answer (its
        sound after ANSWER_GAP_S of silence, or a new playback stream), or the answer has
        played SETTLE_MAX_S: voice barge-in may trust the output."""
        return self.aligner is None or self.aligner.settled

    @property
    def refitting(self) -> bool:
        """Unsettled only while AEC3 re-fits an echo that slipped (Aligner.refitting): voice
        barge-in may count what stands well over the echo expected, band by band."""
        return self.aligner is not None and self.aligner.refitting

    @property
    def echo_energy(self) -> float:
        """The echo expected at the microphone in the newest frame (mean square, full scale
        1.0; 0.0 without a canceller): voice barge-in asks the user to be louder than a
        residual of it (Aligner)."""
        return self.aligner.echo_energy if self.aligner is not None else 0.0

    @property
    def heard_s(self) -> float:
        """Far-end sound the canceller has adapted on since it was made (seconds)."""
        return self._heard * BLOCK / VAD_RATE if self._aec is not None else 0.0

    def over_echo_db(self, out: np.ndarray) -> float:
        """How far the loudest band of ``out``, the newest frame as this canceller gave it,
        is over the echo expected in that band (Aligner.over_echo_db; -inf: none known)."""
        return self.aligner.over_echo_db(out) if self.aligner is not None else -math.inf

    def linear(self) -> np.ndarray | None:
        """The newest frame after AEC3's linear filter alone (16 kHz int16): the echo less
        what the filter models, and a user talking over it not yet taken down by the
        suppressor. None where there is none (no AEC3, the stock wheel, a bypassed frame).
        Asked while the speaker plays (voice barge-in) and of a confirmed answer's frames
        (:meth:`_check_path`): it costs a copy, made once per frame."""
        if not self._linear or self._aec is None:
            return None
        if self._linear_frame is None:  # (one copy per frame, whoever asks first)
            self._linear_frame = self._aec.linear()
        return self._linear_frame

    def process(self, frame: AudioFrame) -> AudioFrame:
        """One capture frame through the chain; the far end advances by the same length."""
        if frame.rate != VAD_RATE or frame.width != 2 or frame.channels != 1:
            raise ValueError(
                f"the echo canceller takes 16 kHz 16-bit mono, got {frame.rate} Hz "
                f"{frame.width * 8}-bit ×{frame.channels}"
            )
        if frame.samples % BLOCK:
            raise ValueError(
                f"the echo canceller takes whole 10 ms blocks, got {frame.samples} samples "
                f"({frame.samples / VAD_RATE * 1000:g} ms)"
            )
        near = frame.array()
        far = self.far.take(near.size, frame.timestamp)
        self.far.heard(near, far)
        x = near
        self._linear = False
        if self._aec is not None:
            x = self._cancel(near, far)
        if self._ns is not None:
            x = self._ns.process(x)
        if self._agc is not None:
            x = self._agc.process(x)
        self.frames += 1
        return AudioFrame(x.tobytes(), VAD_RATE, timestamp=frame.timestamp)

    def _hand_delay(self) -> None:
        """After each of the echo estimate's searches: the delay AEC3_CONFIG's AEC3 is
        handed (aec3_delay_ms), changed when two searches in a row agree (TwoInARow,
        AEC3_AGREE_MS), or placed afresh when the estimate jumped (:func:`jumped`)."""
        assert self._aec is not None and self.aligner is not None
        self._delay_seen = self.aligner.echo_found
        echo_delay = self.aligner.echo_delay
        if echo_delay is not None:
            self._found.append(echo_delay)
        d = aec3_delay_ms(echo_delay, self.stream_delay_ms)
        jump = False
        if d == self.stream_delay_ms and echo_delay is not None and jumped(self._found):
            # placed afresh: only a different delay resets AEC3's filters (where the echo
            # was placed before, the filter has since followed it away: 4 ms more headroom),
            # two searches agreed on it already (jumped). Where the Aligner keeps the echo
            # (0 ms handed) it moves the reference itself
            if self._fits():
                self.refused += 1
                self._found.clear()  # (the searches so far say no more than this one)
                return
            d = self._afresh(echo_delay)
            jump = d != self.stream_delay_ms
        if d == self.stream_delay_ms:
            self._delay_pending.clear()
            self._deferred = None  # (the echo is back where the filter has it)
            return
        if not jump and not self._delay_pending.agree(d):
            return
        self._delay_pending.clear()
        if not jump and echo_delay is not None and aec3_inside(echo_delay, self.stream_delay_ms):
            self._deferred = d  # the echo crept to the filter's edge, inside it still
            return
        self._hand(d, jump)

    def _fits(self) -> bool:
        """AEC3's linear filter removes the echo (JUMP_FIT_DB): its placement holds, whatever
        the echo estimate says."""
        fit = self._fit
        return len(fit) >= FIT_MIN and statistics.median(fit) >= JUMP_FIT_DB

    def _afresh(self, echo_delay: int | None, headroom: int = AEC3_HEADROOM_MS) -> int:
        """The delay that places the echo afresh (a different one resets AEC3's filters):
        where the estimate puts it (``headroom`` into the filter), or, where it was placed
        before (the filter has since followed the echo away), 4 ms more headroom. The delay
        handed now where none can be (the Aligner keeps the echo: 0 ms handed, it moves the
        reference itself)."""
        d = self.stream_delay_ms if echo_delay is None else aec3_place_ms(echo_delay, headroom)
        return max(0, d - 4) if d == self.stream_delay_ms else d

    def _hand(self, d: int, jump: bool) -> None:
        """AEC3 is handed the delay ``d`` (ms): its filters reset, the echo leaks until they
        re-learn it, so the answer proves its delay again."""
        assert self._aec is not None and self.aligner is not None
        self.jumps += jump
        self._deferred = None
        self._path.reset()
        self._found.clear()  # (a new filter: the searches before say nothing of it)
        self._fit.clear()
        self.stream_delay_ms = self._aec.stream_delay_ms = d
        self.delay_moves += 1
        self.aligner.unconfirm()

    def _cancel(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """AEC3 on one frame, or while the far end has been silent IDLE_AEC_S, the frame
        itself delayed as AEC3 delays it (nothing to cancel: the device idles most of the
        time). On the way back, AEC3 is first handed the last 10 ms it did not see, so its
        output goes on where the bypass left off."""
        assert self._aec is not None and self.aligner is not None
        self.slipped = False
        if not near.size:
            return near
        energy = self.aligner.block(near, far)
        # the far end's blocks with sound: those whose energy (Aligner.block: the far end's
        # first; None only while it is silent) is not zero
        k = near.size // BLOCK
        sounding = 0 if energy is None else k - energy[:k].count(0.0)
        if sounding:
            self._quiet = 0
            self._heard += sounding
        else:
            self._quiet += near.size
        if self.tuned and self.aligner.echo_found != self._delay_seen:
            self._hand_delay()
        if self._deferred is not None and self._quiet >= ANSWER_GAP_S * VAD_RATE:
            self._hand(self._deferred, False)  # between answers: the next proves it anyway
        tail, self._tail = self._tail, near[-BLOCK:]
        if self._quiet > IDLE_AEC_S * VAD_RATE:
            self._idle = True
            self.bypassed += 1
            self._slip.forget()
            return np.concatenate((tail[-AEC_DELAY:], near[:-AEC_DELAY]))
        if self._idle:
            self._idle = False
            self._aec.process(tail, np.zeros(BLOCK, np.int16))
        # one call per frame: the library cuts it into 10 ms blocks itself
        out: np.ndarray = self._aec.process(near, far)
        self._linear, self._linear_frame = self.linear_out, None
        if self._linear:
            self._slip.heard(near, self.linear())
        self.aligner.cancelled(out, energy)  # its convergence confirms the answer's delay
        if self._linear and energy is not None:
            self._check_path(tail, near)
        return out

    def _check_path(self, tail: np.ndarray, near: np.ndarray) -> None:
        """What the linear filter takes off loud echo, in any answer (the fit record,
        JUMP_FIT_DB). A confirmed answer whose linear filter no longer removes its echo:
        slipped up to 27 ms (:class:`SlipWatch`), the far end is moved with it and the
        answer proves its delay again; else moved further under it (:class:`PathWatch`),
        AEC3 is handed its delay afresh, deeper into the filter (:meth:`_afresh`,
        PATH_HEADROOM_MS: its filters reset and re-learn the path in ~1 s where, adapting,
        they stayed ~10 dB short for minutes) and the answer proves its delay again
        (Aligner.unconfirm: what leaks meanwhile is no barge-in)."""
        assert self._aec is not None and self.aligner is not None
        echo = self.aligner.echo_energy
        confirmed = self.aligner.confirmed
        # (PathWatch judges a confirmed answer's frames only: the others do not break its run)
        loud = self._path.loud(echo) if confirmed else db(echo) >= PATH_ECHO_DB
        slip = confirmed and db(echo) >= SLIP_ECHO_DB
        linear = self.linear() if loud or slip else None
        if linear is None:
            return
        scale = 1 / (near.size * SCALE**2)
        x = linear.astype(np.float32)
        lin = float(x @ x) * scale
        # the microphone under the linear output (LINEAR_DELAY): the last frame's tail and
        # this one's head
        a = tail[-LINEAR_DELAY:].astype(np.float32)
        b = near[:-LINEAR_DELAY].astype(np.float32)
        raw_db = db(float(a @ a + b @ b) * scale)
        removed = raw_db - db(lin)  # (what the linear filter took off, dB)
        if loud and raw_db >= PATH_RAW_DB:  # (no sound, nothing to remove)
            self._fit.append(removed)
        if not confirmed:
            return
        if slip and raw_db >= SLIP_RAW_DB and removed < SLIP_LOW_DB:
            self.slipped, lag = self._slip.frame()
            # moved only under a filter that has shown it fits the path (PathWatch.armed):
            # one AEC3 was just handed a delay for still has its taps a delay step off (it
            # found 8 ms "slips" there, and moved the far end out of place)
            if lag and self._path.armed:
                self.slips += 1
                self.far.move(lag / VAD_RATE)
                self.aligner.unconfirm(refit=True)
                self._path.recent.clear()
                return
        if not loud:
            return
        # the microphone under the output (AEC3's lags its input by AEC_DELAY): the last
        # frame's tail and this one's head
        a, b = tail[-AEC_DELAY:].astype(np.float32), near[:-AEC_DELAY].astype(np.float32)
        if not self._path.frame(float(a @ a + b @ b) * scale, lin, echo):
            return
        self.path_moves += 1
        d = self._afresh(self.aligner.echo_delay, PATH_HEADROOM_MS)
        if d != self.stream_delay_ms:
            self._hand(d, True)
        else:
            self.aligner.unconfirm()


def make(setup: EchoSetup, far: FarEnd) -> EchoCanceller | None:
    """The daemon's canceller for ``setup``, or None when the microphone path is plain."""
    if not setup.active:
        return None
    return EchoCanceller(setup, far)
