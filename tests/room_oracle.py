"""What came out of the PulseAudio room (agentd/sim/room.py), judged by content, not clocks.

A recording of the sink monitor is aligned with the reference signal, so how much of an answer
really came out is exact to one 5 ms block whatever the rig's own latencies. Used by the tests
and bench/daemon_latency.py; test-only, so it lives outside the package. Samples are float32 as
agentd.audio.pcm.to_float makes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from agentd.audio.alsa import Capture
from agentd.audio.frame import AudioFrame
from agentd.config import InputSettings

# A block "played" when the room holds the answer's sound there: correlated with it at the
# same level. Not 0.9: when a flush makes PulseAudio rewind its null sink, the last tens of
# ms it had already rendered come out altered (correlation ~0.75) but at full level; they
# were heard, so they count. Silence or an unrelated cue after the cut scores near 0.
MATCH_CORR = 0.6


def room_probe(loop: asyncio.AbstractEventLoop, on_frame: Callable[[AudioFrame], None]) -> Capture:
    """The room recorded from outside (its monitor, delivered as 16 kHz mono frames): "the
    speaker" for measurements. Its first second or so arrives late; start it early."""
    settings = InputSettings(device="mic", rate=48000, channels=2, period_ms=10)
    return Capture(settings, loop, on_frame)


def cut_error_ms(lo: float, hi: float, end_ms: float) -> float:
    """How far a truncate's ``audio_end_ms`` lies from the cut interval ``played_span_ms``
    found (0 inside it)."""
    return 0.0 if lo <= end_ms <= hi else min(end_ms - lo, end_ms - hi, key=abs)


def align(rec: np.ndarray, ref: np.ndarray, rate: int = 16000) -> tuple[int, float]:
    """Where ``ref`` begins inside ``rec`` (sample offset) and its gain there: the peak of the
    normalised cross-correlation of the reference's first half second (mono float, same
    rate). Normalised, so loud unrelated sound elsewhere in the recording cannot win."""
    head = ref[: min(ref.size, rate // 2)]
    n = 1 << int(np.ceil(np.log2(rec.size + head.size)))
    xc = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(head, n)), n)
    valid = max(1, rec.size - head.size + 1)
    power = np.concatenate([[0.0], np.cumsum(rec.astype(np.float64) ** 2)])
    window = power[head.size : head.size + valid] - power[:valid]
    energy = float(np.dot(head, head))
    score = xc[:valid] / (np.sqrt(np.maximum(window, 0) * energy) + 1e-12)
    score[window < 1e-4 * energy] = -1.0  # silence (-40 dB) aligns with nothing
    off = int(np.argmax(score))
    return off, block_gain(rec[off : off + head.size], head, rate)


def block_gain(x: np.ndarray, ref: np.ndarray, rate: int = 16000) -> float:
    """The gain of ``x`` against ``ref`` (aligned), the median over the loud 5 ms blocks that
    match (MATCH_CORR). Not one least-squares gain over the whole: where little of the half
    second ``align`` reads is in place (the device ran dry 180 ms in and the rest came
    later, the cut at 400 ms) that read the answer as 9 dB quieter than it played, and no
    block then matched at that level (bench/daemon_latency.py: a truncate +381 ms off,
    nothing of the answer found)."""
    blk = rate // 200
    n = min(x.size, ref.size) // blk * blk
    xb, rb = x[:n].reshape(-1, blk).astype(np.float64), ref[:n].reshape(-1, blk)
    ex, er, xr = (xb * xb).sum(1), (rb * rb).sum(1), (xb * rb).sum(1)
    ok = (xr >= MATCH_CORR * np.sqrt(ex * er)) & loud_blocks(ref[:n], rate) & (er > 0)
    if not ok.any():  # nothing matches: the least-squares gain of the whole
        return float(xr.sum() / (er.sum() + 1e-9))
    return float(np.median(xr[ok] / er[ok]))


SUBSTEPS = 6  # subsample's steps per sample


def subsample(rec: np.ndarray, ref: np.ndarray, off: int, rate: int = 16000) -> np.ndarray:
    """``ref`` delayed by the fraction of a sample (of ``SUBSTEPS``) that matches ``rec`` at
    ``off`` best. The room resamples (the answer's rate, PulseAudio's 48 kHz, the probe's
    16 kHz), so its output sits a fraction of a sample off the integer alignment, and at half
    a sample a fricative's 4-6 kHz correlates ~0.5 with the reference: read as not played,
    70 ms of an "s" before a cut made the cut look that much early (2 opus runs in 22)."""
    n = min(ref.size, rec.size - off, rate // 2)
    spec, freq = np.fft.rfft(ref.astype(np.float64)), np.fft.rfftfreq(ref.size)
    best: tuple[float, np.ndarray] | None = None
    for d in np.arange(-SUBSTEPS // 2, SUBSTEPS // 2 + 1) / SUBSTEPS:
        cand = np.fft.irfft(spec * np.exp(-2j * np.pi * freq * d), ref.size)
        score = float(np.dot(rec[off : off + n], cand[:n]))
        if best is None or score > best[0]:
            best = (score, cand)
    assert best is not None
    return best[1].astype(np.float32)


def played_span_ms(rec: np.ndarray, ref: np.ndarray, rate: int = 16000) -> tuple[float, float]:
    """How much of ``ref`` came out of the room, judged by content (no clocks): per 5 ms block,
    the recording matches the reference while it played and holds something else (silence,
    a cue) once it was cut. An underrun inserts a gap and shifts the rest; the alignment
    follows it. Returns the interval the cut lies in: (end of the last loud block that
    matched, start of the first loud block after it that did not; inf if none)."""
    off, gain = align(rec, ref)
    ref = subsample(rec, ref, off, rate)
    blk, win, reach = rate // 200, rate // 20, rate * 3 // 10
    loud = loud_blocks(ref, rate)

    def matches(k: int, at: int) -> bool:
        """Block ``k`` of ``ref`` is at ``at``: same sound (see MATCH_CORR), same level
        (within 6 dB of the overall gain)."""
        r, x = ref[k * blk : (k + 1) * blk], rec[at : at + blk]
        if x.size < blk:
            return False
        er, ex = float(np.dot(r, r)), float(np.dot(x, x))
        c = float(np.dot(x, r)) / (np.sqrt(er * ex) + 1e-12)
        return c >= MATCH_CORR and 0.25 <= ex / (er * gain**2 + 1e-12) <= 4

    def resync(k: int, at: int) -> int | None:
        """A gap before block ``k``: find where the next 50 ms of ``ref`` went, ahead of
        ``at`` (a gap only delays), by normalised cross-correlation."""
        r = ref[k * blk : k * blk + win]
        x = rec[max(0, at - blk) : at + reach + win]
        if r.size < win or x.size < win:
            return None
        xc = np.correlate(x, r, "valid")
        norm = np.sqrt(np.convolve(x**2, np.ones(win), "valid") * float(np.dot(r, r))) + 1e-12
        best = int(np.argmax(xc / norm))
        return max(0, at - blk) + best if xc[best] / norm[best] >= 0.9 else None

    shift, last_match, first_miss, misses = 0, 0.0, float("inf"), 0
    for k in np.flatnonzero(loud[: ref.size // blk]):
        at = off + int(k) * blk + shift
        found = None if matches(int(k), at) else resync(int(k), at)
        if found is not None and matches(int(k), found):
            shift, at = found - off - int(k) * blk, found
        if matches(int(k), at):
            last_match, first_miss, misses = (int(k) + 1) * 5.0, float("inf"), 0
        else:
            first_miss = min(first_miss, int(k) * 5.0)
            misses += 1
            if misses >= (20 if last_match else 200):  # 100 ms of speech never came out: the cut
                break
    return last_match, first_miss


def loud_blocks(ref: np.ndarray, rate: int = 16000) -> np.ndarray:
    """Per 5 ms block of ``ref``: loud enough to tell whether it played (-20 dB under the mean)."""
    e = np.add.reduceat(ref**2, np.arange(0, ref.size, rate // 200))
    return np.asarray(e >= 0.01 * e.mean())


def loud_end_ms(ref: np.ndarray) -> float:
    return float((np.flatnonzero(loud_blocks(ref))[-1] + 1) * 5)


def loud_runs_ms(
    ref: np.ndarray, min_ms: float = 150, after_ms: float = 0
) -> list[tuple[float, float]]:
    """Stretches of speech in ``ref`` (start, end in ms): where a click cuts inside speech."""
    runs: list[tuple[float, float]] = []
    start: int | None = None
    for i, loud in enumerate([*loud_blocks(ref), False]):
        if loud and start is None:
            start = i
        elif not loud and start is not None:
            if (i - start) * 5 >= min_ms and start * 5 >= after_ms:
                runs.append((start * 5.0, i * 5.0))
            start = None
    return runs
