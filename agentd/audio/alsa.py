"""ALSA capture and playback: blocking pyalsaaudio I/O in dedicated threads, data to/from the
event loop through bounded queues, device faults turned into a reopen loop.

Capture delivers 16 kHz mono int16 frames of ``period_ms`` (the VAD rate: everything
downstream starts there). Playback takes PCM at the API output rate, converts it to the
card's rate, and accounts per assistant item for the samples that really left the speaker.
A speaker that stops taking audio while audio waits (a hung card, a stuck plugin) is a fault
like a vanished one: detected within PLAYBACK_STALL_S, counted, reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agentd.audio.devices import list_pcms
from agentd.audio.echo import FarEnd
from agentd.audio.frame import AudioFrame, Framer
from agentd.audio.pcm import to_float, to_int16
from agentd.audio.playout import Playout
from agentd.audio.resample import VAD_RATE, StreamResampler
from agentd.config import InputSettings, OutputSettings

log = logging.getLogger("agentd.audio")

REOPEN_INITIAL_S = 0.5
REOPEN_MAX_S = 10.0
# The card's capture buffer: rides out a scheduling hiccup, adds no latency (periods are read
# as they fill). An idle nap is at most a quarter of it, so a nap plus a 120 ms stall of the
# whole process (a Pi swapping) plus a card period still fit (200 ms overran with 100 ms
# naps); 800 ms lets push-to-talk idle nap ~200 ms (one batch), 400 ms gave ~90 ms naps and
# twice the wake-ups in the PulseAudio room (every read there wakes the plugin's thread).
CAPTURE_BUFFER_MS = 800
# The card period while no frame is waited for (push-to-talk without voice barge-in: the
# answer starts at the release whatever the microphone still holds): a sound server sends
# one packet per period and wakes its client thread for it and for every packet read
# (bench/idle.py, the PulseAudio room), so long periods save most of an idle daemon's
# wake-ups. A multiple of every period_ms (10, 20, 30); frames are still period_ms long.
RELAXED_CARD_MS = 60
CAPTURE_QUEUE_FRAMES = 100  # 2 s of 20 ms frames between the capture thread and the loop
# soxr streams its output in blocks: HQ (like MQ) holds back 22 ms of the newest audio on
# average, 37 ms at worst (48 → 16 kHz in 20 ms reads); LQ holds 11 ms, 20 at worst: the
# endpoint reaches the loop that much sooner. LQ is flat to 6 kHz; the VAD looks below 4 kHz.
# (tests/test_frame.py failed with it, 2 runs of 4: its probe took the answer's first
# syllable, which came sooner, for the user's speech; fixed there.) The steady engine would
# hold a constant 12.5 ms, at ~6× the CPU of a microphone that runs all day.
CAPTURE_QUALITY = "LQ"
STALL_S = 5.0  # a device thread silent this long is unhealthy (watchdog stops pinging)
FRAMES_STALL_S = 2.0  # an open microphone whose frames have not reached the loop this long
PLAYBACK_STALL_S = 1.0  # audio waiting and the speaker took none of it: a hung device
# A microphone thread that has not come back from one driver call for this long is left behind
# and the device opened afresh by a new thread (service.py): PulseAudio's ALSA plugin wedges
# for good when its server dies mid-stream, and only a new stream cures it.
WEDGED_S = 8.0
# A stream (re)starting after the speaker was idle may take longer: a sound server's first
# stream, a sink waking from suspend (pulse took 1.9 s here), a Bluetooth speaker.
PLAYBACK_START_S = 3.0
# continuous mode: a flush waits at most this long for a write of answer audio in progress
FLUSH_WAIT_S = 0.05
# Silence written ahead of the first audio after a flush dropped the device. A stream that
# restarts from drop() on its first write has only that write ahead of it, where one that
# restarts from running dry (an answer played whole) starts with more: in the PulseAudio
# room at 1x delivery every answer after an interruption ran dry 0.1-0.4 s in (24
# underruns in 21 turns of bench/daemon_latency.py, a ~15 ms gap in about half of them)
# and none played whole did. With this: 0 in 21, no gap in 13; the adaptive playout delay
# could not learn it (its read-ahead floor is a floor under the link's ~20 ms, not added)
RESTART_LEAD_MS = 10
PLAYBACK_QUEUE_S = 300  # answer audio queued ahead of the speaker, at most (~29 MB at 48 kHz)
XRUN_LOG_S = 60.0  # a storm of overruns/underruns is said once per this window, with its count


def _name_os_thread(name: str) -> None:
    """Give the OS thread Python's name (``top -H``, /proc/PID/task/*/comm, bench/idle.py
    tell the capture and playback threads apart); best effort, Linux only."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


class DeviceStalled(Exception):
    """The device stopped moving audio without an error: handled like a vanished device."""


def describe_alsa_error(exc: BaseException, device: str, kind: str) -> str:
    """One sentence a person can act on: busy, missing (with what exists), or ALSA's words."""
    text = str(exc)
    low = text.lower()
    if "busy" in low:
        return (
            f"{kind} device {device!r} is busy: another program holds it "
            "(stop it, or use a dmix/dsnoop PCM)"
        )
    if any(w in low for w in ("no such", "not found", "unknown pcm", "no such device")):
        names = [p.name for p in list_pcms(kind)][:12]
        have = ", ".join(names) if names else "none (no sound card?)"
        return f"{kind} device {device!r} not found; PCMs that exist: {have}"
    return f"{kind} device {device!r}: {text}"


@dataclass
class AudioStats:
    overruns: int = 0
    underruns: int = 0
    dropped_frames: int = 0
    reopens: int = 0
    frame_errors: int = 0  # capture: frames whose handler raised (the next ones still flow)
    stalls: int = 0  # playback: the device stopped taking audio and was reopened
    starved: int = 0  # playback, continuous mode: the device played all it held (came late)
    faults: int = 0  # playback: stalls and failures that cut off what was playing
    refused_ms: int = 0  # playback: audio refused because the queue was full


class _DeviceThread:
    """Open → do I/O until an error → close → reopen with backoff, until stopped."""

    kind = "capture"

    def __init__(self, device: str, on_status: Callable[[str | None], None] | None) -> None:
        self.device = device
        self.on_status = on_status or (lambda error: None)
        self.error: str | None = None
        self.stats = AudioStats()
        self.heartbeat = time.monotonic()
        self.opened_at = 0.0  # when the device last opened
        self._said: dict[str, float] = {}
        self.opened = threading.Event()
        self.first_attempt = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"agentd-{self.kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop and wait for the thread (blocking: off the event loop use :meth:`aclose`)."""
        self.request_stop()
        self._thread.join(timeout)

    def request_stop(self) -> None:
        self._stop.set()
        self._wake()

    async def aclose(self, timeout: float = 1.0) -> None:
        """Stop without blocking the loop: a thread stuck in a driver call may take the whole
        timeout to join, and the loop must keep serving meanwhile."""
        self.request_stop()
        await asyncio.to_thread(self._thread.join, timeout)

    def problem(self, now: float | None = None) -> str | None:
        """Why the device side is not doing its job, or None. A thread waiting to reopen a
        missing device is doing its job."""
        now = time.monotonic() if now is None else now
        if not self._thread.is_alive():
            return f"{self.kind} thread ended"
        if now - self.heartbeat >= STALL_S:
            return f"{self.kind} thread stuck for over {STALL_S:.0f} s"
        return None

    def healthy(self) -> bool:
        return self.problem() is None

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _wake(self) -> None:
        pass

    def _open(self) -> object:
        raise NotImplementedError

    def _io(self, pcm: object) -> None:
        raise NotImplementedError

    def _set_error(self, error: str | None) -> None:
        """One error line when the device goes bad (retries stay at debug), one info line when
        it is back."""
        if error == self.error or self._stop.is_set():  # stopped or left behind: not news
            return
        if error and self.error:
            log.debug("%s", error)
        elif error:
            log.error("%s", error)
        elif self.stats.reopens or self.error:
            log.info("%s device %r is back", self.kind, self.device)
        else:
            log.info("%s device %r open", self.kind, self.device)
        self.error = error
        self.on_status(error)

    def _xrun(self, level: int, what: str, key: str = "xrun", exc_info: bool = False) -> None:
        """Say a storm once per XRUN_LOG_S, not once per period: the counters keep the rest."""
        now = time.monotonic()
        if now - self._said.get(key, -XRUN_LOG_S) >= XRUN_LOG_S:
            self._said[key] = now
            log.log(level, "%s device %r: %s", self.kind, self.device, what, exc_info=exc_info)

    def _wait_alive(self, delay: float) -> None:
        """Wait before the next reopen, beating: a thread waiting for a device is healthy."""
        end = time.monotonic() + delay
        while not self._stop.is_set() and (left := end - time.monotonic()) > 0:
            self.heartbeat = time.monotonic()
            self._stop.wait(min(1.0, left))

    def _run(self) -> None:
        import alsaaudio

        _name_os_thread(self._thread.name)
        delay = REOPEN_INITIAL_S
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                pcm = self._open()
            except alsaaudio.ALSAAudioError as exc:
                self._set_error(describe_alsa_error(exc, self.device, self.kind) + "; retrying")
                self.first_attempt.set()
                self._wait_alive(delay)
                delay = min(REOPEN_MAX_S, delay * 2)
                continue
            self.first_attempt.set()
            self.opened_at = time.monotonic()
            self.opened.set()
            self._opened()
            delay = REOPEN_INITIAL_S
            done = False
            try:
                self._io(pcm)
                done = True
            except (alsaaudio.ALSAAudioError, DeviceStalled) as exc:
                self.stats.reopens += 1
                self._failed()
                what = str(exc) if isinstance(exc, DeviceStalled) else f"failed ({exc})"
                self._set_error(f"{self.kind} device {self.device!r} {what}; reopening")
            finally:
                self.opened.clear()
                with contextlib.suppress(Exception):  # a vanished device may fail to close
                    # pyalsaaudio's close() drains a playback PCM first, which never returns
                    # from a hung device: drop what it holds (a flush did anyway) first
                    pcm.drop()  # type: ignore[attr-defined]
                with contextlib.suppress(Exception):
                    pcm.close()  # type: ignore[attr-defined]
            if done:  # closed on purpose (idle, or to reopen it otherwise): not a fault
                self._park()

    def _park(self) -> None:
        """The I/O loop closed the device on purpose: wait (beating) until it is wanted."""

    def _opened(self) -> None:
        """The device is open (again): say it is back."""
        self._set_error(None)

    def _failed(self) -> None:
        """The device failed mid-I/O (the thread reopens it next)."""


class Capture(_DeviceThread):
    """Microphone → 16 kHz mono int16 frames of ``period_ms`` (timestamped when read),
    handed to ``on_frame`` on the loop. A full queue drops the oldest frame and counts it."""

    kind = "capture"

    def __init__(
        self,
        settings: InputSettings,
        loop: asyncio.AbstractEventLoop,
        on_frame: Callable[[AudioFrame], None],
        on_status: Callable[[str | None], None] | None = None,
    ) -> None:
        super().__init__(settings.device, on_status)
        self.settings = settings
        self.loop = loop
        self.on_frame = on_frame
        self.card_rate = settings.rate
        self.card_channels = settings.channels
        self._queue: deque[AudioFrame] = deque(maxlen=CAPTURE_QUEUE_FRAMES)
        self._lock = threading.Lock()
        self._scheduled = False
        # Frames gathered before the loop is woken: 1 = each frame at once. While the frames
        # only fill the pre-roll (push-to-talk, button up) nobody waits for them, and waking
        # the loop for each costs more than the rest of an idle daemon (bench/idle.py); the
        # thread also converts that many card periods per call (soxr's per-call cost).
        self._gather = 1
        # While gathering, the thread naps instead of waking per card period: the device's
        # buffer holds the frames meanwhile and one nap's worth is read in a row. A pressed
        # button (gather(1)) or stop() ends the nap at once.
        self._nap = threading.Event()
        self.delivered_at = 0.0  # when the loop last handled a frame
        self._wait_from = 0.0  # frames are due from here on (the device opened)
        self._starving = False  # no frames came before the device failed: a reopen is no cure
        # The card period (the device's, not the frames'): period_ms, or RELAXED_CARD_MS
        # where no frame is waited for. Set by the daemon; a change reopens the device.
        self.card_period_ms = int(settings.period_ms)
        self._card_ms = int(settings.period_ms)  # what the open device was asked for
        self.period_frames = settings.rate * settings.period_ms // 1000  # as opened
        self.buffer_frames = settings.rate * CAPTURE_BUFFER_MS // 1000

    def problem(self, now: float | None = None) -> str | None:
        """Also unhealthy: an open microphone whose frames stopped reaching the loop."""
        now = time.monotonic() if now is None else now
        since = max(self.delivered_at, self._wait_from)
        if self._thread.is_alive() and self.opened.is_set() and now - since >= FRAMES_STALL_S:
            # said first: a thread stuck in read() is this same fault, one line not two
            return f"no microphone audio reached the daemon for over {FRAMES_STALL_S:.0f} s"
        return super().problem(now)

    def _opened(self) -> None:
        if not self._starving:
            self._wait_from = self.opened_at
        super()._opened()

    def wedged(self, now: float | None = None) -> str | None:
        """Stuck in one driver call for WEDGED_S with the device open (only a new thread with
        a new stream cures that): said how, or None."""
        now = time.monotonic() if now is None else now
        if self.alive() and self.opened.is_set() and now - self.heartbeat >= WEDGED_S:
            return f"capture device {self.device!r} stuck in its driver for over {WEDGED_S:.0f} s"
        return None

    def succeed(self, old: Capture, error: str) -> None:
        """Take over from ``old``, left behind wedged (before start()): its counters, the
        ``error`` said of it (so the reopen says nothing new until the device is back), and
        its frames' silence, which a new stream does not end (the watchdog stays withheld
        until frames flow again). The card period is the daemon's to set (_pace_card)."""
        self.stats, self.error = old.stats, error
        self.stats.reopens += 1
        self.delivered_at = old.delivered_at
        self._starving = True
        self._gather = old._gather

    def _failed(self) -> None:
        since = max(self.delivered_at, self._wait_from)
        self._starving = time.monotonic() - since >= FRAMES_STALL_S

    def _open(self) -> object:
        import alsaaudio

        s = self.settings
        self._card_ms = card_ms = self.card_period_ms
        period = s.rate * card_ms // 1000
        pcm = alsaaudio.PCM(
            alsaaudio.PCM_CAPTURE,
            alsaaudio.PCM_NORMAL,
            rate=s.rate,
            channels=s.channels,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            periodsize=period,
            periods=max(4, CAPTURE_BUFFER_MS // card_ms),
            device=s.device,
        )
        info = pcm.info()
        self.card_rate, self.card_channels = int(info["rate"]), int(info["channels"])
        self.period_frames = int(info.get("period_size") or period)
        self.buffer_frames = int(info.get("buffer_size") or 4 * period)
        if self.settings.channel >= self.card_channels:
            pcm.close()
            raise alsaaudio.ALSAAudioError(
                f"audio.input.channel {self.settings.channel} but the device has "
                f"{self.card_channels} channel(s)"
            )
        return pcm

    def _io(self, pcm: object) -> None:
        rs = StreamResampler(self.card_rate, VAD_RATE, quality=CAPTURE_QUALITY)
        framer = Framer(VAD_RATE, self.settings.period_ms)
        channels, pick = self.card_channels, self.settings.channel
        raw: list[np.ndarray] = []  # card periods not yet converted (while gathering)
        raw_frames = 0  # card frames in raw
        fed = made = 0  # samples into and out of the resampler
        clock = _StreamClock(self.card_rate, VAD_RATE)
        period = self.period_frames
        per_frame = self.card_rate * self.settings.period_ms // 1000  # card frames a VAD frame
        # at most a quarter of the buffer: a nap plus a 120 ms stall of the whole process (a
        # Pi swapping) still fits in it; half the buffer overran there
        nap_max_s = self.buffer_frames / 4 / self.card_rate
        backlog = 0  # card periods left to read in this batch
        read_at = time.monotonic()
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            if self.card_period_ms != self._card_ms:
                return  # reopened with the new period (by _run)
            if self._gather > 1 and backlog <= 0:  # nobody waits for these: let them pile up
                self._nap.wait(min(nap_max_s, self._gather * self.settings.period_ms / 1000))
                self._nap.clear()
                # What piled up is reckoned by the clock, not asked of the device:
                # pyalsaaudio's avail() holds the GIL, and PulseAudio's ALSA plugin, wedged
                # when its server died mid-stream, blocked it for good: the whole daemon froze
                # (the loop, the watchdog, every thread). One period more than the clock says:
                # that read waits for it (GIL released), so each batch leaves the device
                # drained and the reckoning's error never adds up.
                backlog = int((time.monotonic() - read_at) * self.card_rate / period) + 1
            backlog -= 1
            length, data = pcm.read()  # type: ignore[attr-defined]
            read_at = time.monotonic()
            if length < 0:  # overrun: the next read() re-prepares the stream
                self.stats.overruns += 1
                self._xrun(
                    logging.WARNING,
                    f"overrun, microphone audio lost ({self.stats.overruns} so far): "
                    "the daemon fell behind the device (CPU starved? try a larger period_ms)",
                )
                continue
            if length == 0:
                continue
            x = np.frombuffer(data, dtype="<i2")[: length * channels]
            raw.append(x.reshape(-1, channels)[:, pick] if channels > 1 else x)
            raw_frames += length
            if raw_frames < self._gather * per_frame:  # converted in one go: a fifth of the cost
                continue
            mono = raw[0] if len(raw) == 1 else np.concatenate(raw)
            raw.clear()
            raw_frames = 0
            y = rs.process(mono)
            fed += mono.size
            made += y.size
            for frame in framer.push(to_int16(y), end=clock.end(read_at, fed, made)):
                self._deliver(frame)

    def _deliver(self, frame: AudioFrame) -> None:
        if self._stop.is_set():  # stopping, or left behind wedged: a newer thread delivers
            return
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                self.stats.dropped_frames += 1
                self._xrun(
                    logging.WARNING,
                    f"the event loop is {CAPTURE_QUEUE_FRAMES * self.settings.period_ms} ms "
                    f"behind, oldest microphone audio dropped "
                    f"({self.stats.dropped_frames} frames so far)",
                )
            self._queue.append(frame)
            if self._scheduled or len(self._queue) < self._gather:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self.loop.call_soon_threadsafe(self._drain)

    def _wake(self) -> None:
        self._nap.set()

    def gather(self, frames: int) -> None:
        """Wake the loop once per ``frames`` frames (1: every frame, at once). Going back to
        1 hands over what is gathered now: a pressed button must not wait for the batch.
        Called per frame: the same value again costs nothing."""
        if max(1, frames) == self._gather:
            return
        with self._lock:
            self._gather = max(1, frames)
            if self._gather == 1:
                self._nap.set()  # read what the device holds now
            if self._gather > 1 or self._scheduled or not self._queue:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """On the loop. A handler that raises loses that one frame, not the stream: the
        exception is counted and said once per XRUN_LOG_S, and delivery goes on."""
        while True:
            with self._lock:
                if not self._queue:
                    self._scheduled = False
                    return
                frame = self._queue.popleft()
            try:
                self.on_frame(frame)
            except Exception as exc:
                self.stats.frame_errors += 1
                self._xrun(
                    logging.ERROR,
                    f"a microphone frame failed in the daemon ({type(exc).__name__}: {exc}; "
                    f"{self.stats.frame_errors} so far); the next frames go on",
                    key="frame",
                    exc_info=True,
                )
            else:
                self.delivered_at = time.monotonic()


class _StreamClock:
    """When the newest converted sample was captured, for the Framer's ``end``: the stream's
    own sample count, re-anchored to the monotonic clock only where that disagrees. A read
    returns some time after its last sample was captured (scheduling; a device or sound
    server handing over two periods at once), and the resampler holds back a varying part
    of its input, so anchoring every read at its return time made frames 20 ms apart step
    by -55…+83 ms. A read that shows the stream ahead of the clock (impossible: the anchor
    was late) moves the anchor back at once; when every read for WINDOW_S showed it behind
    (audio lost in an overrun, the card's clock drifting), the anchor moves forward by the
    least of those lags."""

    WINDOW_S = 1.0

    def __init__(self, card_rate: int, out_rate: int) -> None:
        self.card_rate, self.out_rate = card_rate, out_rate
        self._anchor: tuple[float, int] | None = None  # (capture time, samples out then)
        self._lags: deque[tuple[float, float]] = deque()  # (read_at, lag) within WINDOW_S

    def end(self, read_at: float, fed: int, made: int) -> float | None:
        """``fed`` card samples in, ``made`` out so far, the last read returned at
        ``read_at``: the newest sample out's capture time, or None (sample-exact: no change)."""
        now = read_at - (fed / self.card_rate - made / self.out_rate)  # less what is held
        if self._anchor is None:
            self._anchor = (now, made)
            return now
        t, n = self._anchor
        lag = now - (t + (made - n) / self.out_rate)
        if lag < -0.001:
            self._lags.clear()
            self._anchor = (now, made)
            return now
        self._lags.append((read_at, lag))
        if read_at - self._lags[0][0] < self.WINDOW_S:
            return None
        least = min(x for _, x in self._lags)
        self._lags.clear()
        if least <= 0.002:
            return None
        self._anchor = (t + (made - n) / self.out_rate + least, made)
        return self._anchor[0]


@dataclass
class _Segment:
    item: str | None
    start: int  # card frames, in the writer's running position
    end: int


class Playback(_DeviceThread):
    """Speaker: non-blocking writes from a bounded pending queue, ALSA buffer ≤ ``buffer_ms``,
    flush at once, and played-sample accounting per item.

    The thread sleeps while there is nothing to do: with nothing queued it waits for
    :meth:`play` or :meth:`flush` (waking once per IDLE_WAIT_S only to show it is alive); while
    playing it wakes when the device has room for a period, or when what it holds runs
    out. A stream still arriving starts (or restarts after running dry) after the adaptive
    playout delay of :mod:`agentd.audio.playout`; cues and ended streams start at once."""

    kind = "playback"
    POLL_S = 0.004  # the shortest sleep: the granularity of "the device has room now"
    IDLE_WAIT_S = 1.0  # nothing to play: wake only to beat (heartbeat, well under STALL_S)
    # Nothing played for this long (and not continuous): the device may be closed until
    # audio comes (``park_s``). An open stream of a sound server keeps its sink at the
    # stream's 20 ms latency, so the microphone's packets come every 20 ms whatever its own
    # period (bench/idle.py, the PulseAudio room); reopening costs ~2 ms there.
    PARK_S = 5.0

    def __init__(
        self,
        settings: OutputSettings,
        source_rate: int,
        on_status: Callable[[str | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings.device, on_status)
        self.settings = settings
        self.source_rate = source_rate
        self.clock = clock
        self.card_rate = settings.rate
        self.card_channels = settings.channels
        self.buffer_frames = settings.rate * settings.buffer_ms // 1000
        self.period_frames = settings.rate * 20 // 1000
        self._rs: dict[int, StreamResampler] = {}
        self._lock = threading.Lock()
        self._pending: deque[tuple[str | None, np.ndarray, bool]] = deque()  # item, pcm, last
        self._pending_frames = 0
        self._held_frames = 0  # taken from the queue by the thread, not yet in the device
        self._pending_since = 0.0  # when the queue last became non-empty
        self._stream_ended = True  # the newest queued audio ends its stream (last=True)
        self._segments: deque[_Segment] = deque(maxlen=64)
        self._written = 0
        self._in_buffer = 0
        self._snap_t = clock()
        self._flush = False
        # A flush that drops what the device holds is due and not yet done: until it is, the
        # device plays on and heard_ms is not final (:attr:`stopping`).
        self._stopping = False
        # Held by the thread around writing answer audio and accounting for it, and by a
        # flush in continuous mode: after flush() nothing more of the answer is written, and
        # what was written is all counted (it plays out, so a truncate must include it).
        self._write_lock = threading.Lock()
        self._plays_out = 0  # the writer's position up to which all that was written plays
        self._wake_ev = threading.Event()
        self.ends_at = 0.0  # when the last written sample leaves the speaker
        self.flushed_at = 0.0  # when the last flush reached ALSA (drop, or the writer stopped)
        self.silent_at = 0.0  # ... and when the last of the answer left the speaker after it
        self.queue_limit_s = PLAYBACK_QUEUE_S
        self.progress_at = clock()  # the device last took audio (or had none waiting)
        # After a stall the reopened device must prove it takes audio before it counts as
        # working again: until then it is "suspect" (unhealthy, its error still shown).
        self.suspect = False
        self.stall_limit = PLAYBACK_START_S  # PLAYBACK_STALL_S once the stream is running
        self.playout = Playout()  # guarded by _lock: play() feeds it, the thread reads it
        self.far_end: FarEnd | None = None  # the echo canceller's tap: what ALSA was handed
        # echo.mode aec: the stream never stops (silence is written while nothing plays), so
        # the sound server keeps one latency and the echo's delay behind its reference stays
        # put; every (re)start came with its own, ~20 ms apart, and AEC3 leaked echo for
        # ~2 s while it re-learned (issue 22). A flush (an interruption) does not restart it
        # either: the writer stops and what ALSA holds (≤ buffer_ms) plays out.
        self.continuous = False
        self._sound_end = 0  # the writer's position after the last audio that was not filler
        # Close the idle device after this long (None: never). Set by the daemon where the
        # microphone runs longer periods than the speaker's 20 ms: elsewhere it saves nothing.
        self.park_s: float | None = None
        self.parked = False  # closed while idle; play(), warm() or continuous reopen it
        self._opened_clock = clock()
        self._warm_at = 0.0  # when warm() last asked for the device

    # -------------------------------------------------------------- loop side

    def play(
        self,
        pcm: bytes,
        item: str | None = None,
        rate: int | None = None,
        gain: float | None = None,
        last: bool = False,
    ) -> None:
        """Queue int16 mono PCM (at ``rate``, default the API output rate); ``last`` ends
        the stream so the resampler releases its tail (end of an item, or a whole cue)."""
        rate = rate or self.source_rate
        rs = self._rs.get(rate)
        if rs is None or rs.out_rate != self.card_rate:
            # Steady: a stream arriving in real time must be playable in real time. LQ at
            # 24 → 48 kHz fell up to 20 ms behind its input between blocks, and the playout
            # delay had to cover that on every answer (a clean link "showed" 20 ms of jitter);
            # the steady engine is a constant 10 ms behind from the first chunk, so nothing
            # grows. Its ~1.5 ms of CPU per second of answer is paid only while answering.
            rs = self._rs[rate] = StreamResampler(rate, self.card_rate, steady=True)
        if self._refuse(len(pcm) // 2, rate, last):
            rs.reset()
            return
        y = rs.process(to_float(pcm), last=last)
        if last:
            rs.reset()
        if not y.size:
            if item is not None and last:
                with self._lock:
                    self.playout.ended()
            return
        g = self.settings.volume if gain is None else gain
        samples = np.frombuffer(to_int16(y, g), "<i2")
        with self._lock:
            if item is not None:  # answer audio measures the link; a cue (item None) does not
                if pcm:  # (an end-of-stream marker carries no audio and no timing)
                    self.playout.arrived(self.clock(), samples.size * 1000 / self.card_rate)
                if last:
                    self.playout.ended()
            if not self._pending:
                self._pending_since = self.clock()
            self._pending.append((item, samples, last))
            self._pending_frames += samples.size
            self._stream_ended = last
        self._wake_ev.set()

    def warm(self) -> None:
        """Audio is likely soon (a turn began or ended): a parked device is reopened now,
        before the answer's first chunk, and stays open ``park_s`` from now."""
        with self._lock:
            self._warm_at = self.clock()
        self._wake_ev.set()

    def _refuse(self, samples: int, rate: int, last: bool) -> bool:
        """A server streaming far faster than real time must not grow the queue without end:
        beyond ``queue_limit_s`` new audio is refused (what is queued plays on, in order),
        counted, and said once per XRUN_LOG_S."""
        with self._lock:
            full = self._pending_frames >= self.queue_limit_s * self.card_rate
            if full:
                self.stats.refused_ms += samples * 1000 // rate
                if last:
                    self._stream_ended = True
        if full:
            self._xrun(
                logging.WARNING,
                f"playback queue full ({self.queue_limit_s:.0f} s of audio waiting): the "
                "server streams far faster than real time; refusing more "
                f"({self.stats.refused_ms} ms refused so far)",
                key="queue",
            )
        return full

    def flush(self) -> None:
        """Silence now: drop what is queued here and (within a poll) what ALSA holds.

        In continuous mode (echo.mode aec) what ALSA holds plays out instead (at most
        ``buffer_ms``): dropping it restarts the sound server's stream with another latency,
        and the echo canceller then leaked echo for seconds while it re-learned the delay
        (issue 22: 6-8 of 40 answers after a barge-in cut themselves). That audio is heard,
        so :meth:`heard_ms` counts it from now on."""
        keep = self.continuous
        # (bounded: a writer stuck in the driver must not freeze the loop; the count is then
        # short by that one write)
        locked = keep and self._write_lock.acquire(timeout=FLUSH_WAIT_S)
        try:
            with self._lock:
                self._pending.clear()
                self._pending_frames = self._held_frames = 0
                self._stream_ended = True  # nothing more is expected: running dry is no fault
                self._flush = True
                self._stopping = not keep
                self.playout.ended()
                if keep:
                    self._plays_out = self._written
        finally:
            if locked:
                self._write_lock.release()
        for rs in self._rs.values():
            rs.reset()
        self._wake_ev.set()

    @property
    def stopping(self) -> bool:
        """A flush has yet to stop the device: it plays on until the thread drops what it
        holds (within a poll; on a loaded machine tens of ms), so a truncate waits for it."""
        with self._lock:
            return self._stopping

    def busy(self, now: float | None = None) -> bool:
        """Sound is (or is about to be) coming out of the speaker: queued, held by the thread
        on its way to ALSA (taken from the queue, ``ends_at`` not yet moved), or in the
        device. A closed device plays nothing: the mic must not stay muted because the
        speaker is unplugged (or hung: a suspect device plays only its probe of silence)."""
        now = self.clock() if now is None else now
        if (not self.opened.is_set() and not self.parked) or self.suspect:
            return False
        with self._lock:
            held = self._pending or self._held_frames or self._flush
            return bool(held) or now < self.ends_at

    def queued_until(self, now: float | None = None) -> float:
        """When everything handed to :meth:`play` so far will have left the speaker: where
        the next audio starts. ``ends_at`` alone knows only the device's buffer, so audio
        arriving faster than real time would be placed seconds early (the echo reference of
        a voice barge-in then misses the echo it is there to explain)."""
        now = self.clock() if now is None else now
        with self._lock:
            queued = self._pending_frames + self._held_frames
            return max(now, self.ends_at) + queued / self.card_rate

    @property
    def last_played_at(self) -> float:
        """The moment the last sample really left (or will leave) the speaker."""
        return self.ends_at

    def played_position(self, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        with self._lock:
            left = max(0.0, self._in_buffer - (now - self._snap_t) * self.card_rate)
            return int(self._written - left)

    def problem(self, now: float | None = None) -> str | None:
        """Also unhealthy: audio waiting that the device does not take, and a device reopened
        after a stall that has not yet shown it plays again."""
        if (p := super().problem(now)) is not None:
            return p
        now = self.clock() if now is None else now
        if self.suspect:
            return f"playback device {self.device!r} stopped taking audio; reopening"
        if self.opened.is_set() and now - self.progress_at >= self.stall_limit:
            return f"playback device {self.device!r} takes no audio"
        return None

    def heard_ms(self, item: str, now: float | None = None) -> int:
        """Milliseconds of ``item`` that really played (or, flushed in continuous mode, will
        have played once ALSA's part is out): what a truncate must carry."""
        pos = self.played_position(now)
        with self._lock:
            pos = max(pos, self._plays_out)
            frames = sum(
                max(0, min(pos, s.end) - s.start) for s in self._segments if s.item == item
            )
        return frames * 1000 // self.card_rate

    def _wake(self) -> None:
        self._wake_ev.set()

    # -------------------------------------------------------------- thread side

    def _open(self) -> object:
        import alsaaudio

        s = self.settings
        period = max(1, s.rate * 20 // 1000)
        pcm = alsaaudio.PCM(
            alsaaudio.PCM_PLAYBACK,
            alsaaudio.PCM_NONBLOCK,
            rate=s.rate,
            channels=s.channels,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            periodsize=period,
            periods=max(2, s.buffer_ms // 20),
            device=s.device,
        )
        info = pcm.info()
        self.card_rate, self.card_channels = int(info["rate"]), int(info["channels"])
        self.buffer_frames = int(info["buffer_size"])
        self.period_frames = int(info.get("period_size", period)) or period
        return pcm

    def _opened(self) -> None:
        self.progress_at = self._opened_clock = self.clock()
        self.parked = False
        if not self.suspect:  # after a stall the device is back once it has played again
            self._set_error(None)

    def _failed(self) -> None:
        """What the device held never played, and what waited is stale by the time it is
        back: the accounting stops at what really left the speaker (so a truncate is still
        true) and the queue is dropped. The loop learns of it through ``stats.faults``."""
        now = self.clock()
        with self._lock:
            # A stalled device (suspect) played nothing since the thread last looked: what it
            # held then is what never played (extrapolating would count its frozen buffer).
            stalled_at = self._written - self._in_buffer
            self._written = stalled_at if self.suspect else self.played_position_locked(now)
            for s in self._segments:
                s.end = min(s.end, self._written)
            self._plays_out = min(self._plays_out, self._written)
            self._in_buffer, self._snap_t, self.ends_at = 0, now, now
            self._pending.clear()
            self._pending_frames = self._held_frames = 0
            self._stream_ended, self._flush, self._stopping = True, False, False
            self.playout.ended()
            self.stats.faults += 1
        self._tap_dropped(now)
        for rs in self._rs.values():
            rs.reset()

    def _io(self, pcm: object) -> None:
        chunk: np.ndarray | None = None
        item: str | None = None
        if self.suspect:  # prove the reopened device plays: a buffer of silence must drain
            chunk = self._probe()
        dropped = False  # after drop() the stream holds nothing, whatever avail() says
        dry = False  # the stream ran dry (XRUN) and that was already judged
        chunk_last = tail_ended = True  # the audio written last ended its stream: may run dry
        prev_in_buf = 0
        # Where the stream last (re)started: once well over a buffer was written since, the
        # device is surely playing (a sound server may take up to two buffers before it
        # starts, and its avail() is no guide meanwhile) and the short stall limit applies.
        start_pos = self._written
        while not self._stop.is_set():
            self._wake_ev.clear()  # before reading the state: a wake-up after this is kept
            self.heartbeat = now = self.clock()
            with self._lock:
                flush, self._flush = self._flush, False
            keep = flush and self.continuous and not self.suspect
            if keep:  # the stream runs on: what ALSA holds plays out (see flush())
                chunk, tail_ended = None, True
                self.flushed_at = self.clock()
            elif flush:
                chunk, tail_ended = self._probe() if self.suspect else None, True
                # (the position where the sound stopped, read as it stops: the loop's ``now``
                # can be tens of ms old on a loaded machine, and the truncate waits for this)
                at = self.clock()
                pcm.drop()  # type: ignore[attr-defined]
                self._tap_dropped(at)
                self.flushed_at = self.silent_at = self.clock()
                dropped = True
                with self._lock:
                    self._written = self.played_position_locked(at)
                    for s in self._segments:
                        s.end = min(s.end, self._written)
                    self._sound_end = min(self._sound_end, self._written)
                    self._plays_out = min(self._plays_out, self._written)
                    self._in_buffer, self._snap_t, self.ends_at = 0, at, at
                    self._stopping = False
                start_pos = self._written
            avail = pcm.avail()  # type: ignore[attr-defined]
            in_buf = self.buffer_frames - avail if avail >= 0 and not dropped else 0
            # what the device holds of real audio (the rest, continuous mode's filler)
            sound = min(in_buf, max(0, self._sound_end - (self._written - in_buf)))
            if keep:
                self.silent_at = now + sound / self.card_rate
            played = in_buf < prev_in_buf and not dropped  # the device drained some
            if prev_in_buf > 0 and in_buf <= 0 and not dropped and self.continuous:
                # it played all it held though continuous mode keeps it fed: this thread
                # came late (a loaded machine) and the stream ran on after a gap the far
                # end's timeline does not show
                self._tap_starved()
            # Running dry mid-stream: ALSA may say so (avail < 0, a failed write), but the pulse
            # plugin often does not; our own clock of what was written always does.
            ran_out = avail < 0 or (chunk is None and now > self.ends_at + self.POLL_S)
            if ran_out and not dry:
                dry, start_pos = True, self._written
                if not tail_ended:
                    self._underrun()
            if chunk is None:
                with self._lock:
                    if self._pending and (sound > 0 or self._ready_to_start(now)):
                        item, chunk, chunk_last = self._pending.popleft()
                        self._pending_frames -= chunk.size
                        self._held_frames = chunk.size
            # After drop() the stream is in SETUP: write() prepares it. avail() there is
            # stale: an ioplug (pulse, pipewire) keeps its pointers, so a buffer that was full
            # at the drop reads 0 for ever, and waiting for room would wait for ever.
            n = 0
            if chunk is not None and (avail != 0 or dropped):
                room = self.buffer_frames - in_buf
                take = chunk[:room] if room > 0 else chunk[:0]
                if take.size and dropped and not self.continuous:
                    lead = self._silence(pcm, RESTART_LEAD_MS * self.card_rate // 1000, now)
                    in_buf += lead
                    dropped = not lead
                    take = take[: max(0, self.buffer_frames - in_buf)]
                if take.size:
                    n = self._write_answer(pcm, take, item)
                    if n < 0:  # the pulse plugin reports running dry only here
                        if not dry and not tail_ended:
                            self._underrun()
                        dry, n = True, 0
                    if n > 0:  # the first of them leaves the speaker after what ALSA held
                        # (after a run dry avail() may exceed the buffer: it holds nothing)
                        self._tap(take[:n], now + max(0, in_buf) / self.card_rate)
                        dropped = dry = False
                        in_buf += n
                        sound = in_buf
                        chunk = chunk[n:] if n < chunk.size else None
                        tail_ended = chunk is None and chunk_last
            if self.continuous and chunk is None and not self.suspect and (avail != 0 or dropped):
                took = self._fill(pcm, now, in_buf, sound)
                in_buf += took
                dropped = dropped and not took
                n = n or took
            running = self._written - start_pos > 3 * self.buffer_frames
            limit = PLAYBACK_STALL_S if running else PLAYBACK_START_S
            self._watch_progress(now, n > 0, played, chunk is not None or in_buf > 0, limit)
            prev_in_buf = in_buf
            with self._lock:
                self._in_buffer, self._snap_t = in_buf, now
                self._held_frames = 0 if chunk is None or self.suspect else chunk.size
                if (sound or chunk is not None) and not self.suspect:  # not the probe
                    self.ends_at = now + sound / self.card_rate
                park_at = self._park_at() if chunk is None else None
                if park_at is not None and now >= park_at:
                    return  # idle: closed by _run, reopened once audio comes (_park)
                timeout = self._sleep_s(now, chunk is not None, in_buf, dropped, sound)
            self._wake_ev.wait(timeout)

    def _write_answer(self, pcm: object, take: np.ndarray, item: str | None) -> int:
        """Write answer audio and count it, unless a flush came since the thread looked (0):
        a flush in continuous mode waits for this, so what it counts is all there is."""
        with self._write_lock:
            with self._lock:
                if self._flush:
                    return 0
            data = np.repeat(take, self.card_channels) if self.card_channels > 1 else take
            n = int(pcm.write(data.tobytes()))  # type: ignore[attr-defined]
            if n > 0:
                with self._lock:
                    last = self._segments[-1] if self._segments else None
                    if last and last.item == item and last.end == self._written:
                        last.end += n
                    else:
                        self._segments.append(_Segment(item, self._written, self._written + n))
                    self._written += n
                    self._sound_end = self._written
            return n

    def _park_at(self) -> float | None:
        """When the idle device may close (under ``_lock``): PARK_S after its last sound
        left (or it opened); None while audio waits, in continuous mode, or while a suspect
        device has yet to prove it plays."""
        if self.park_s is None or self._pending or self.continuous or self.suspect:
            return None
        return max(self.ends_at, self._opened_clock, self._warm_at) + self.park_s

    def _park(self) -> None:
        """Closed while idle: wait, beating, until audio is queued or continuous mode wants
        the stream running; the thread then reopens the device."""
        self.parked = True
        since = self.clock()
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            with self._lock:
                self._flush = self._stopping = False  # a closed device holds nothing to drop
                if (
                    self._pending
                    or self.continuous
                    or self.park_s is None
                    or self._warm_at >= since
                ):
                    return
            self._wake_ev.wait(self.IDLE_WAIT_S)
            self._wake_ev.clear()

    def _sleep_s(
        self, now: float, holding: bool, in_buf: int, dropped: bool, sound: int | None = None
    ) -> float:
        """How long the thread may sleep (under ``_lock``): until the device has room for
        a period, the buffer runs out, or a waiting stream may start; play() and flush()
        wake it sooner. Nothing at all to do: IDLE_WAIT_S (no polling while idle), or in
        continuous mode until a period of silence is to be written."""
        sound = in_buf if sound is None else sound
        if holding or (self._pending and sound > 0):  # audio waits: refill once a period
            # has room (the buffer stays nearly full: its whole length is the margin against
            # a thread held up by load, as with the old 4 ms poll, at a fifth of the wake-ups)
            low = self.buffer_frames - self.period_frames
            if dropped or in_buf <= low:
                return self.POLL_S
            return max(self.POLL_S, (in_buf - low) / self.card_rate)
        due = [now + self.IDLE_WAIT_S]
        if (park_at := self._park_at()) is not None:
            due.append(park_at)
        if sound > 0:  # the tail plays out: look again when it should have (dry or not)
            due.append(self.ends_at + 2 * self.POLL_S)
        if self._pending:  # a dry speaker: the stream waits for its playout delay
            due.append(self.playout.start_at(self._pending_since))
        if self.continuous and not self.suspect:  # silence is due once a period has room
            target = self._filler_target(sound)
            due.append(now + max(0, in_buf - target + self.period_frames) / self.card_rate)
        return max(self.POLL_S, min(due) - now)

    # ---- the echo canceller's far-end tap: the exact samples ALSA took, as it took them,
    # so the reference is there before its echo can reach the microphone

    def _tap(self, written: np.ndarray, at: float) -> None:
        if self.far_end is not None:
            self.far_end.written(written, self.card_rate, at)

    def _tap_starved(self) -> None:
        self.stats.starved += 1
        if self.far_end is not None:
            self.far_end.starved()
        self._xrun(
            logging.INFO,
            f"the device ran dry ({self.stats.starved} times so far): the playback thread "
            "came late (CPU starved); the echo canceller proves its delay again",
            key="starved",
        )

    def _tap_dropped(self, at: float) -> None:
        if self.far_end is not None:
            self.far_end.dropped(at)

    def _fill(self, pcm: object, now: float, in_buf: int, sound: int) -> int:
        """Continuous mode: top the device's buffer up with silence, tapped like audio (the
        far end is zeros on the same timeline). Idle, the whole buffer is the margin against
        a late thread; behind an answer's audio (its next part late) only two periods, so a
        part arriving soon is not queued behind more silence than needed. Returns frames
        written."""
        room = self._filler_target(sound) - in_buf
        if room <= 0 or (room < self.period_frames and in_buf > 0):
            return 0
        return self._silence(pcm, room, now + in_buf / self.card_rate)

    def _silence(self, pcm: object, frames: int, at: float) -> int:
        """Write ``frames`` of silence, counted and tapped like audio (its first frame
        leaves the speaker at ``at``). Returns frames written."""
        zeros = np.zeros(frames * self.card_channels, "<i2")
        n = pcm.write(zeros.tobytes())  # type: ignore[attr-defined]
        if n <= 0:
            return 0
        self._tap(zeros[:n], at)
        with self._lock:
            self._written += n
        return int(n)

    def _filler_target(self, sound: int) -> int:
        """How full continuous mode keeps the device: the whole buffer while idle, two
        periods behind an answer's audio (see :meth:`_fill`)."""
        return self.buffer_frames if sound == 0 else min(self.buffer_frames, 2 * self.period_frames)

    def _probe(self) -> np.ndarray:
        return np.zeros(self.buffer_frames, "<i2")

    def _watch_progress(
        self, now: float, took: bool, played: bool, waiting: bool, limit: float
    ) -> None:
        """Audio waiting (held here or in the device's buffer) and none taken or played for
        ``limit`` seconds: the device hung. Raised as a fault, so the thread reopens it. A
        suspect device is cleared only by playing (its buffer draining), not by taking: an
        empty buffer takes a write whether or not the card runs."""
        if played and self.suspect:
            self.suspect = False
            self._set_error(None)
        if took or played or not waiting:
            self.progress_at = now
            return
        self.stall_limit = limit
        if now - self.progress_at >= limit:
            self.stats.stalls += 1
            self.suspect = True
            raise DeviceStalled(
                f"stopped taking audio ({now - self.progress_at:.1f} s with audio waiting, "
                f"{self.stats.stalls} stall(s) so far)"
            )

    def _underrun(self) -> None:
        self.stats.underruns += 1
        with self._lock:
            self.playout.ran_dry()
        self._xrun(
            logging.INFO,  # audible as a stutter, but the answer still plays out whole
            f"speaker ran dry mid-answer ({self.stats.underruns} underruns so far): audio "
            "arrives slower than real time (network or CPU)",
        )

    def _ready_to_start(self, now: float) -> bool:
        """The speaker is dry: an ended stream (or a cue) starts at once, one still arriving
        after the playout delay the link has shown it needs."""
        return self._stream_ended or self.playout.ready(now, self._pending_since)

    def played_position_locked(self, now: float) -> int:
        left = max(0.0, self._in_buffer - (now - self._snap_t) * self.card_rate)
        return int(self._written - left)
