"""The clock drift between the speaker's card and the microphone's, estimated online from
the far end and the raw microphone exactly as the echo canceller is handed them (sans-I/O:
frames in, ppm out; issue 22, docs/aec3-config.md "The far end resampled by the drift").

Why: separate USB cards run ~100 ppm apart, so the echo's delay behind its reference creeps
by a sample every 0.6 s; AEC3's linear filter cannot follow it and leaves most of the echo to
the suppressor, which then takes the user with it in double talk (correlation 0.78 at 0 dB).
With the far end resampled by the drift the linear stage works (0.865, 0 false barge-ins).

How: not the delay's peak. In a reverberant room (RT60 0.3 s) the direct path is ~3 % of the
echo's energy and whole-band cross-correlation peaks at random lags; instead, per WIN_S window
of far-end sound every STEP_S, the echo path's transfer function (cross-spectrum over the far
end's power, regularised, the room's TAIL_S inside the window), and its shift against a
reference window's (peak of their cross-correlation, parabola: sub-sample). The shifts lie on
a line whose slope is the drift. What the daemon does to the timeline breaks the line into
segments (a new stream re-anchors it, the Aligner moves the reference, the microphone's clock
is re-anchored, the far end's resampler restarts at a new ratio): each has its own
intercept, all one slope. The compensation applied to the far end is integrated (ppm·samples)
and added back: the line is the whole drift's, whatever was applied when.
A step nobody announced (a shift JUMP samples off, confirmed by the next) starts one too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from agentd.audio.pcm import SCALE
from agentd.audio.resample import VAD_RATE

WIN_S = 1.0  # far end per transfer function: long against the room's tail
STEP_S = 0.5  # one window every this much (overlapping: twice the points)
TAIL_S = 0.4  # microphone beyond each window: the room's reverberation (RT60 0.3 s)
SEARCH = 200  # samples either side of a segment's last shift searched (100 ppm: 0.8 / step)
# ... unless the peak anywhere is this much higher: the path stepped further (the rig drops
# 20 ms of backlog when it falls behind; a sound server restarts its stream)
STEP_PEAK = 1.5
SOUND_MS = 1e-4  # a window's far end under this mean square (full scale 1: -40 dBFS): skipped
# A shift's peak less clear than this (its height over the correlation's spread) is not the
# echo path: the rig's echo gave 9-43, a microphone hearing noise or another talker 2.6-5.2
MIN_CLEAR = 6.0
OFF = 2.0  # a shift this many samples off the line is not the echo (someone talks): refit
JUMP = 4.0  # ... this far off the segment's last one, and the next agrees: a step
MAX_PPM = 200.0  # ... beyond what the drift can have moved it since (USB cards: ±100 ppm)
GIVE_S = 4.0  # far-end sound before an estimate is given at all
GIVE_SE_PPM = 4.0  # ... and the line's standard error under this
GIVE_POINTS = 8  # ... and this many shifts on it
# Sure (then it stops: its own ~1.7 ms CPU per audio-second while it runs, bench/echo.py
# --cpu, the aec path's 7.6 apart): this much far-end sound
# and its last STABLE_N estimates within STABLE_PPM. Offline on the rig: within 10 ppm after
# 3-6 s of sound, within 2 ppm after 10 s.
SURE_S = 10.0
STABLE_N = 6
STABLE_PPM = 2.0
SURE_SE_PPM = 1.5  # ... and the line's standard error under this (stable is not yet right)
# Checked again after this much audio (drift moves with the cards' temperature, slowly:
# ~1 ppm/°C for a cheap crystal), from scratch: a few seconds of CPU every ten minutes.
RECHECK_S = 600.0
MAX_POINTS = 240  # shifts kept for the fit (2 min of far-end sound; one never sure stays cheap)
SEGMENT_MAX_S = 60.0  # a segment this long starts afresh (its shifts would leave SEARCH)
SILENT_MAX_S = 90.0  # ... and one after this long without far-end sound (100 ppm: 144 samples)


@functools.cache  # (a window's size is always the same; the search costs ~50 µs)
def fft_size(n: int) -> int:
    """The smallest 2^a·3^b·5^c >= ``n``: numpy's FFT is fast there (its radices; a window
    of 22400 samples takes 22500 points, not the next power of two, 2^15)."""
    best, p5 = 1 << max(0, (n - 1).bit_length()), 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def transfer(far: np.ndarray, mic: np.ndarray, size: int) -> np.ndarray:
    """The echo path's transfer function from a window of far end and the microphone over it
    and the room's tail (float64 spectra of ``size`` points)."""
    spec = np.fft.rfft(far, size)
    power = spec.real**2 + spec.imag**2
    h = np.fft.rfft(mic, size) * np.conj(spec)
    h /= power + 1e-2 * power.mean()
    return h


def shift(h: np.ndarray, ref: np.ndarray, around: float | None) -> tuple[float, float]:
    """How far (samples, sub-sample) the response ``h`` lies after ``ref``: the peak of their
    cross-correlation within SEARCH of ``around`` (None, or STEP_PEAK times higher elsewhere:
    anywhere), and its height over the correlation's spread (how clear it is)."""
    # (single precision: a third of the double transform's cost; the peak and its parabola
    # come out the same to a hundredth of a sample)
    c = np.fft.irfft((h * np.conj(ref)).astype(np.complex64))
    size = c.size
    j = int(np.argmax(c))
    if around is not None:
        c0 = round(around)
        idx = np.arange(c0 - SEARCH, c0 + SEARCH + 1) % size
        near = int(idx[int(np.argmax(c[idx]))])
        if c[j] < STEP_PEAK * c[near]:
            j = near
    y0, y1, y2 = c[(j - 1) % size], c[j], c[(j + 1) % size]
    den = y0 - 2 * y1 + y2
    lag = (j if j < size // 2 else j - size) + (0.5 * (y0 - y2) / den if den else 0.0)
    return float(lag), float(y1 / (c.std() + 1e-30))


@dataclass
class _Fit:
    ppm: float
    se_ppm: float
    used: int


def fit(t: np.ndarray, lag: np.ndarray, seg: np.ndarray, rate: int = VAD_RATE) -> _Fit | None:
    """One slope through every segment's shifts (each its own intercept), least squares, then
    again without the shifts more than OFF samples off it. None below 3 usable points."""
    keep = np.ones(t.size, bool)
    res: _Fit | None = None
    # (per segment by bincount: a Python loop over segments and points cost as much as the
    # window's transforms, ~0.7 ms per call with MAX_POINTS)
    _, inv = np.unique(seg, return_inverse=True)
    nseg = int(inv.max()) + 1 if inv.size else 0
    for _ in range(2):
        ik, tk, lk = inv[keep], t[keep], lag[keep]
        n = np.bincount(ik, minlength=nseg)
        have = n > 0
        mt = np.bincount(ik, tk, nseg) / np.maximum(n, 1)
        ml = np.bincount(ik, lk, nseg) / np.maximum(n, 1)
        tc, lc = tk - mt[ik], lk - ml[ik]
        dof = int(keep.sum()) - int(have.sum()) - 1
        den = float(tc @ tc)
        if dof < 1 or den <= 0:
            return res
        slope = float(tc @ lc) / den
        r = lc - slope * tc
        se = math.sqrt(float(r @ r) / dof / den)
        res = _Fit(slope / rate * 1e6, se / rate * 1e6, int(keep.sum()))
        # the off-line test needs every point's residual against its segment's intercept
        icpt = np.where(have, ml - slope * mt, math.nan)
        keep = np.abs(lag - (slope * t + icpt[inv])) <= OFF  # (nan: all its points dropped)
    return res


@dataclass
class DriftEstimator:
    """Online: :meth:`feed` it every frame (the 16 kHz far end as handed to the canceller, the
    raw microphone, the timeline's segment key and the drift the far end is already resampled
    by); it returns the microphone's clock against the speaker's in ppm (positive: the mic
    takes more samples per played second; what the far end's 16 kHz is multiplied by), the
    compensation already applied plus the residual it measures, or None while unsure."""

    rate: int = VAD_RATE
    running: bool = True  # computing (until sure; again after RECHECK_S)
    estimate: float | None = None
    sure: bool = False
    sound_s: float = 0.0  # far-end sound in the windows used since the last (re)start
    windows: int = 0  # transfer functions computed (for benches and tests)
    _pos: int = 0  # microphone samples fed so far (the time axis)
    _applied: float = 0.0  # the compensation applied, integrated over them (ppm·samples)
    _since: int = 0  # ... since it became sure
    _key: Hashable = None
    _seg: int = 0
    _near: list[np.ndarray] = field(default_factory=list)
    _far: list[np.ndarray] = field(default_factory=list)
    _held: int = 0
    _start: int = 0  # _pos of the buffers' first sample
    _seg_start: int = 0
    _ref: np.ndarray | None = None
    _last: float | None = None  # the segment's last shift (where the next is searched)
    _last_t: float = 0.0  # ... its time (s)
    _pending: tuple[float, float, float] | None = None  # (t, absolute shift, raw) off the line
    _pts: list[tuple[float, float, int]] = field(default_factory=list)  # (t s, shift, segment)
    _recent: list[float] = field(default_factory=list)
    _sounded: int = -(1 << 62)  # _pos just after the newest far-end frame with sound

    def feed(
        self, far: np.ndarray, near: np.ndarray, key: Hashable = None, applied_ppm: float = 0.0
    ) -> float | None:
        n = near.size
        self._applied += applied_ppm * n
        if not self.running:
            self._since += n
            if self._since >= RECHECK_S * self.rate:
                self.restart()
            self._pos += n
            return self.estimate
        if key != self._key:  # the timeline moved under it: windows gathered so far straddle
            self._key = key
            self._new_segment()
            self._near, self._far, self._held = [], [], 0
        w, tail, step = (int(v * self.rate) for v in (WIN_S, TAIL_S, STEP_S))
        if np.count_nonzero(far):
            self._sounded = self._pos + n
        elif self._pos - self._sounded > w + tail:  # silence: no window to gather (nearly free)
            self._near, self._far, self._held = [], [], 0
            self._pos += n
            return self.estimate
        if not self._held:
            self._start = self._pos
        self._near.append(near)
        self._far.append(far)
        self._held += n
        self._pos += n
        while self._held >= w + tail:
            x, f = np.concatenate(self._near), np.concatenate(self._far)
            # (the compensation applied by the window's start: it changes in silent gaps)
            applied = self._applied - applied_ppm * (self._pos - self._start)
            self._window(f[:w], x[: w + tail], self._start, applied)
            self._near, self._far = [x[step:]], [f[step:]]
            self._held -= step
            self._start += step
        return self.estimate

    def restart(self) -> None:
        """Measure again from scratch (the drift may have moved); the last estimate stands."""
        self.running, self.sure, self.sound_s, self._since = True, False, 0.0, 0
        self._pts, self._recent, self._ref, self._pending = [], [], None, None
        self._key = object()  # (a fresh segment at the next frame)

    def _new_segment(self) -> None:
        self._seg += 1
        self._seg_start = self._pos
        self._last, self._pending = None, None

    def _window(self, f: np.ndarray, x: np.ndarray, at: int, applied: float) -> None:
        ff = f.astype(np.float64)
        # (einsum, not BLAS: OpenBLAS threads a dot this long, and its threads spin on after
        # it: the whole path measured 3x its CPU)
        if float(np.einsum("i,i->", ff, ff)) < f.size * SOUND_MS * SCALE**2:
            return
        t = at / self.rate
        if at - self._seg_start > SEGMENT_MAX_S * self.rate or t - self._last_t > SILENT_MAX_S:
            self._new_segment()
        self.windows += 1
        # f's echo (f convolved with the room, TAIL_S long) fits in x's length: circular
        # convolution over that many points is the linear one (x against f at every lag,
        # 38400 points, cost 1.7x as much; an echo ahead of its reference wraps to the end)
        size = fft_size(x.size)
        h = transfer(ff, x.astype(np.float64), size)
        if self._ref is None:
            self.sound_s += STEP_S
            self._ref = h
            self._pts.append((t, 0.0, self._seg))
            self._last, self._last_t = 0.0, t
            return
        lag, clear = shift(h, self._ref, self._last)
        if clear < MIN_CLEAR:
            return
        self.sound_s += STEP_S  # (far-end sound whose echo it heard)
        # as it would be without the compensation applied (its slope is the whole drift)
        absolute = lag + applied * 1e-6
        moved = JUMP + MAX_PPM * 1e-6 * self.rate * (t - self._last_t)
        if self._last is not None and abs(lag - self._last) > moved:
            pending, self._pending = self._pending, (t, absolute, lag)
            if pending is None or abs(lag - pending[2]) > OFF:
                return  # one such is no step (someone talks): wait for the next
            self._new_segment()  # a step: both on the new segment
            self._pts.append((pending[0], pending[1], self._seg))
        self._pending = None
        self._last, self._last_t = lag, t
        self._pts.append((t, absolute, self._seg))
        del self._pts[:-MAX_POINTS]
        self._update()

    def _update(self) -> None:
        p = np.array(self._pts)
        res = fit(p[:, 0], p[:, 1], p[:, 2], self.rate)
        if res is None:
            return
        if self.sound_s >= GIVE_S and res.se_ppm <= GIVE_SE_PPM and res.used >= GIVE_POINTS:
            self.estimate = res.ppm
        self._recent = [*self._recent, res.ppm][-STABLE_N:]
        if (
            self.sound_s >= SURE_S
            and res.se_ppm <= SURE_SE_PPM
            and len(self._recent) == STABLE_N
            and max(self._recent) - min(self._recent) <= STABLE_PPM
        ):
            self.estimate, self.sure, self.running, self._since = res.ppm, True, False, 0
            self._near, self._far, self._held = [], [], 0
