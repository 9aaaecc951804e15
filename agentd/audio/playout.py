"""Adaptive playout delay for streamed answer audio (pure: arrival times in, a start rule out).

A fixed jitter buffer makes every answer wait for the worst link it was tuned for. Like
WebRTC's NetEQ, this one measures the link instead: for each streamed answer it tracks the
*relative delay* of every chunk, ``d = (arrival - first arrival) - audio already received``
(how late a chunk came against a playout clock started at the first arrival). A stream
started ``target`` after its first chunk never runs dry while every ``d`` stays below
``target``. How late the first chunk itself came is luck: measured against it, a jittery
answer whose first chunk was late looks clean, and the next answer, whose first chunk may be
early, runs dry. So each answer's figure is its chunks' lateness against the *earliest* chunk
before them (``d`` minus the lowest ``d`` so far, as NetEQ measures against its fastest
packet): one answer shows the link's whole jitter, whatever its first chunk's luck; a server
sending faster than real time keeps lowering that minimum and measures nothing against it.
The target is the worst such figure of the last few answers (a lone spike among them
excepted) plus a margin, floored where a clean link needs nothing but scheduling slack: it
grows only when the link proves jittery, and shrinks again once jittery answers age out of
the window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

FLOOR_MS = 10.0  # a clean link: scheduling slack only (thread wake-ups, the loop's turn)
# Before any answer has shown the link: the first answer of a run starts after this. A clean
# link needs ~15 ms (the playback resampler's 10 ms look-ahead and scheduling slack); this
# also covers a moderately jittery one (~±25 ms) for the one answer that cannot know better.
INITIAL_MS = 50.0
CEILING_MS = 500.0  # beyond this a link is broken, not jittery: waiting longer helps no one
# Headroom over the worst delay seen (a clean link's ~15 ms gets MARGIN_MS instead): on a
# 50 ± 30 ms link answers showed 53–72 ms each, and 1.1× the worst of ten still let one
# answer in ten run dry.
MARGIN = 1.2
MARGIN_MS = 8.0  # and at least this much (a thread woken late on a busy machine)
# One answer's few dozen chunks show less than the link's worst (their latest rarely follows
# their earliest): 50 ± 30 ms showed 52–59 ms per answer, 60 over ten. Until YOUNG answers
# are known their worst gets the wider margin.
YOUNG = 3
YOUNG_MARGIN = 1.35
HISTORY = 10  # answers remembered: a jitter burst is forgotten ten answers later
# One answer far later than all the others remembered (at least SPIKE_AFTER of them) is a
# spike (a stalled scheduler, a lost segment resent), not a jittery link: like NetEQ's peak
# detector, which wants two peaks before it waits for them, it counts only once another answer
# came near it. A jittery link's answers are all late alike and keep their worst.
SPIKE_AFTER = 5
SPIKE_RATIO = 2.0  # "far later": over twice the next worst (plus MARGIN_MS)
DRY_STEP_MS = 10.0  # an underrun the link delays do not explain raises the floor this much
# What underruns alone may add: a sound server's read-ahead (pulse: ~20 ms). Not more: its
# underrun reports are not always audible gaps, and latency is paid on every answer.
DEVICE_MAX_MS = 20.0
DRY_DECAY = 0.95  # and each answer played without one lowers it again by this factor


@dataclass
class PlayoutStats:
    streams: int = 0  # streamed answers seen
    underruns: int = 0  # the speaker ran dry mid-stream
    device_ms: float = 0.0  # the floor underruns taught (the output's own read-ahead)
    chosen_ms: float = INITIAL_MS  # the target the last stream started with
    peak_ms: float = 0.0  # worst lateness (against its earliest chunk) of the last finished stream


class Playout:
    """When a dry speaker may start a stream that is still arriving. Times in seconds."""

    def __init__(self) -> None:
        self._peaks: deque[float] = deque(maxlen=HISTORY)
        self._t0: float | None = None  # first arrival of the stream in progress
        self._received_ms = 0.0
        self._peak_ms = 0.0  # this stream's worst lateness against its earliest chunk so far
        self._min_d = 0.0  # the lowest relative delay of this stream so far (its earliest chunk)
        self._dry = False  # this stream ran dry
        # An output that reads ahead (a sound server pulls tens of ms before they play) runs
        # dry before its buffer is empty by our count: arrivals alone cannot see it, so each
        # underrun raises a floor of its own, which decays slowly over clean answers.
        self._device_ms = 0.0
        self.stats = PlayoutStats()

    @property
    def target_ms(self) -> float:
        """The playout delay a stream (re)starting now waits for."""
        peaks = sorted(self._peaks)
        if len(peaks) >= SPIKE_AFTER and peaks[-1] > peaks[-2] * SPIKE_RATIO + MARGIN_MS:
            peaks.pop()  # a lone spike (see SPIKE_AFTER)
        # Until an answer has shown the link, start conservatively (the stream in progress
        # has shown nothing yet at its first chunk: counting it made this the floor).
        want = FLOOR_MS if peaks else INITIAL_MS
        margin = MARGIN if len(peaks) >= YOUNG else YOUNG_MARGIN
        if self._t0 is not None:  # (re)starting mid-stream: its own delays count too
            peaks.append(self._peak_ms)
        if peaks:
            worst = max(peaks)
            want = max(want, worst * margin, worst + MARGIN_MS)
        return min(CEILING_MS, max(self._device_ms, want))

    def ran_dry(self) -> None:
        """The speaker ran dry mid-stream: start later from now on (NetEQ grows its target
        on an underflow). Counted once per dry spell by the caller."""
        self.stats.underruns += 1
        if self._dry:  # once per stream: a dry spell is one piece of evidence, not many
            return
        self._dry = True
        self._device_ms = min(DEVICE_MAX_MS, max(self._device_ms, self.target_ms + DRY_STEP_MS))
        self.stats.device_ms = self._device_ms

    def arrived(self, now: float, ms: float) -> None:
        """``ms`` of a streamed answer arrived at ``now``; the first call opens a stream."""
        if self._t0 is None:
            self._t0, self._received_ms, self._peak_ms, self._dry = now, 0.0, 0.0, False
            self._min_d = 0.0
            self.stats.streams += 1
            self.stats.chosen_ms = self.target_ms
        d = (now - self._t0) * 1000 - self._received_ms
        self._min_d = min(self._min_d, d)
        self._peak_ms = max(self._peak_ms, d - self._min_d)
        self._received_ms += ms

    def ended(self) -> None:
        """The stream ended (its last chunk, a flush, a fault): its peak joins the history."""
        if self._t0 is None:
            return
        self._peaks.append(self._peak_ms)
        self.stats.peak_ms = self._peak_ms
        if not self._dry:
            self._device_ms *= DRY_DECAY
            self.stats.device_ms = self._device_ms
        self._t0 = None

    def ready(self, now: float, waiting_since: float) -> bool:
        """A dry speaker with audio waiting since ``waiting_since`` may start now."""
        return (now - waiting_since) * 1000 >= self.target_ms

    def start_at(self, waiting_since: float) -> float:
        """When :meth:`ready` turns true (the playback thread sleeps until then)."""
        return waiting_since + self.target_ms / 1000
