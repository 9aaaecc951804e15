"""The voice pipeline: VAD pre-gating with pre-roll, local endpointing, echo suppression and
double-talk barge-in. Pure: 16 kHz frames and speaker facts in, decisions out.

Every duration is measured on the frames received (their length and timestamps), so
``audio.input.period_ms`` of 10, 20 or 30 gives the same pre-roll, hangover, minimum speech,
echo tail and barge-in times; only the VAD's resolution changes.

Why each piece exists:
- pre-roll: webrtcvad needs a few frames to be sure, so the onset would be clipped without
  the ring of audio from just before it;
- min_speech_ms: clicks and coughs must not open a turn or cost uplink bytes;
- hangover: people pause inside sentences; only a longer silence ends the turn;
- echo suppression: the device must not hear itself, up to ``tail_ms`` after the last sample
  really left the speaker (reverb and the codec's own delay);
- double-talk: with ``barge_in: voice`` (``echo.mode: aec`` only) the user may talk over the
  answer: the echo-cancelled frames go to the barge-in policy (agentd/voice/barge_in.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from agentd.audio.frame import AudioFrame, join
from agentd.config import EchoSettings, VadSettings
from agentd.voice.barge_in import BargeInPolicy

RATE = 16000
VAD_FRAME_MS = (10, 20, 30)  # the only frame lengths webrtcvad takes
MIN_VOICED_MS = 40  # the VAD is never trusted on less voiced audio than this
CANDIDATE_GAP_MS = 100  # an unvoiced gap this long abandons an onset candidate
# Adaptive hangover: a speaker who pauses long mid-sentence gets a longer hangover, learned
# from the pauses this gate saw end in more speech (the last PAUSES_KEPT of them).
PAUSES_KEPT = 20
PAUSE_MARGIN_MS = 40  # the hangover stays this far above the longest pause seen
HANGOVER_MAX_MS = 1500  # however long the pauses, a turn still ends
RESUMED_MS = 1000  # speech again this soon after an endpoint: that silence was a pause too
PREROLL_WAIT_MS = 200  # push-to-talk, button up: frames only fill the pre-roll (frame_wait_ms)
ONSET_WAIT_MS = 60  # hands-free in silence: how late an onset may be found (frame_wait_ms)


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    mode: str  # push_to_talk | toggle | hands_free
    aggressiveness: int = 2
    preroll_ms: int = 300
    hangover_ms: int = 240
    min_speech_ms: int = 150
    echo_mode: str = "half_duplex"
    tail_ms: int = 250
    barge_in: str = "button"
    adaptive_hangover: bool = True

    @classmethod
    def of(cls, turn_mode: str, vad: VadSettings, echo: EchoSettings) -> VoiceSettings:
        """The gate's settings from the sections it reads (``turn.mode``, ``vad``, ``echo``)."""
        return cls(
            turn_mode,
            vad.aggressiveness,
            vad.preroll_ms,
            vad.hangover_ms,
            vad.min_speech_ms,
            echo.mode,
            echo.tail_ms,
            echo.barge_in,
            vad.adaptive_hangover,
        )

    @property
    def frames_wait(self) -> bool:
        """Whether a frame's decision is ever wanted as soon as it is captured. Not in
        push-to-talk without voice barge-in: the answer starts at the release whatever the
        microphone still holds, so the card may run with long periods (fewer wake-ups)."""
        return self.mode != "push_to_talk" or self.barge_in == "voice"


# --------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Audio:
    """Audio to send upstream: the 16 kHz frames to send, joined (its timestamp is the
    capture time of the first one)."""

    frame: AudioFrame


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    t: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Local endpoint: ``hangover_ms`` of non-speech after enough speech; ``t`` is the end of
    the frame that completed the hangover."""

    t: float


@dataclass(frozen=True, slots=True)
class BargeIn:
    """``t``: the end of the frame that completed the barge-in evidence."""

    t: float


VoiceEvent = Audio | SpeechStarted | SpeechEnded | BargeIn


@dataclass(frozen=True, slots=True)
class Speaker:
    """What the playback side knows at the moment a mic frame is processed."""

    busy: bool = False
    last_played_at: float = float("-inf")
    echo_heard_s: float = float("inf")  # far-end audio the echo canceller has learned from
    echo_settled: bool = True  # the echo's delay is confirmed for the current answer
    echo_energy: float = 0.0  # the echo expected in the frame (mean square; 0: none known)
    echo_linear: bytes = b""  # the frame after AEC3's linear filter alone (empty: none)
    # how far the frame's loudest band is over the echo expected there (dB; None: not known)
    echo_over: Callable[[np.ndarray], float] | None = None
    # the canceller found the frame is its echo slipped under its filter (EchoCanceller.slipped)
    echo_slipped: bool = False
    # unsettled only while the canceller re-fits an echo that slipped (EchoCanceller.refitting)
    echo_refitting: bool = False


def _energy(frame: AudioFrame) -> float:
    x = frame.floats()
    return float(np.mean(x * x))


class _Preroll:
    """The most recent frames, at most ``ms`` of them (at least one frame)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms
        self._frames: deque[AudioFrame] = deque()
        self._held_ms = 0

    def append(self, frame: AudioFrame) -> None:
        self._frames.append(frame)
        self._held_ms += frame.milliseconds
        while len(self._frames) > 1 and self._held_ms > self.ms:
            self._held_ms -= self._frames.popleft().milliseconds

    def take(self) -> list[AudioFrame]:
        frames = list(self._frames)
        self.clear()
        return frames

    def clear(self) -> None:
        self._frames.clear()
        self._held_ms = 0

    def __len__(self) -> int:
        return len(self._frames)


class VoiceGate:
    """One instance per session; :meth:`process` is called for every mic frame (16 kHz
    mono int16 of 10, 20 or 30 ms, timestamped at capture)."""

    def __init__(
        self,
        settings: VoiceSettings,
        is_speech: Callable[[bytes], bool] | None = None,
        barge_in: BargeInPolicy | None = None,
    ) -> None:
        self.s = settings
        # the linear filter's output (voice barge-in) is another stream: its own VAD state
        self.is_speech: Callable[[bytes], bool]
        self.linear_is_speech: Callable[[bytes], bool]
        if is_speech is None:
            import webrtcvad

            vad, linear_vad = (webrtcvad.Vad(settings.aggressiveness) for _ in range(2))
            self.is_speech = lambda f: vad.is_speech(f, RATE)
            self.linear_is_speech = lambda f: linear_vad.is_speech(f, RATE)
        else:
            self.is_speech = self.linear_is_speech = is_speech
        self.barge_in = barge_in or BargeInPolicy()
        self.preroll = _Preroll(settings.preroll_ms)
        self.ptt_held = False
        self.state = "silence"  # silence | candidate | speech
        self._cand: list[AudioFrame] = []
        self._voiced_ms = 0
        self._gap_ms = 0
        self._silence_ms = 0
        self._ptt_started = False
        self.sent_ms = 0  # audio sent in the current turn
        self.suppressed_frames = 0
        self.through_cue = False  # a wake-word turn: the "heard you" cue must not cut it
        self.pauses: deque[int] = deque(maxlen=PAUSES_KEPT)  # mid-speech silences (ms)
        self._spoke_until: float | None = None  # last voiced moment before the last endpoint

    def wake_turn(self) -> None:
        """A turn opened by the wake word, replayed from the word's end: the user is already
        talking, so the listen cue playing meanwhile is let through (160 ms of tone the
        server ignores) rather than closing the mic and cutting the command's start."""
        self.reset()
        self.through_cue = True

    # ---------------------------------------------------------------- push-to-talk

    def press(self) -> None:
        """Button down in push_to_talk: send from the first speech, with pre-roll."""
        self.ptt_held, self._ptt_started, self.sent_ms = True, False, 0

    def release(self) -> list[VoiceEvent]:
        self.ptt_held = False
        return []

    def new_turn(self) -> None:
        self.sent_ms = 0
        self.through_cue = False

    def reset(self) -> None:
        self.state, self._cand = "silence", []
        self._voiced_ms = self._gap_ms = self._silence_ms = 0
        self.preroll.clear()

    # ---------------------------------------------------------------- frames

    def echo_guard(self, frame: AudioFrame, speaker: Speaker) -> bool:
        """True while the mic must stay closed (half-duplex, including the tail): a frame that
        began before the tail ended may hold echo."""
        if self.s.echo_mode == "off" or self.through_cue:
            return False
        if self.ptt_held:  # the button says the user talks: only a playing cue is held back
            return speaker.busy
        return speaker.busy or frame.timestamp < speaker.last_played_at + self.s.tail_ms / 1000

    def process(self, frame: AudioFrame, speaker: Speaker = Speaker()) -> list[VoiceEvent]:
        _check(frame)
        if self.echo_guard(frame, speaker):
            self.suppressed_frames += 1
            self.reset()
            if self.s.barge_in == "voice" and self.s.echo_mode == "aec":
                return self._double_talk(frame, speaker)
            return []
        self.barge_in.reset()
        if self.s.mode == "push_to_talk":
            if not self.ptt_held:  # button up: the frame is only pre-roll, no VAD needed
                self.preroll.append(frame)
                return []
            return self._ptt(frame, self.is_speech(frame.audio))
        return self._gated(frame, self.is_speech(frame.audio))

    @property
    def frame_wait_ms(self) -> int:
        """How long a frame's decision may wait after it is captured (0: not at all); the
        capture side hands frames over in batches that long (Capture.gather) and saves the
        wake-ups. Push-to-talk with the button up only fills the pre-roll (PREROLL_WAIT_MS);
        hands-free in silence only looks for an onset, and one found ONSET_WAIT_MS later
        loses nothing (the pre-roll holds what came before it; the endpoint, once speech
        started, is decided per frame). Voice barge-in always decides per frame."""
        if self.s.barge_in == "voice":
            return 0
        if self.s.mode == "push_to_talk":
            return 0 if self.ptt_held else PREROLL_WAIT_MS
        if self.s.mode == "hands_free" and self.state == "silence":
            return ONSET_WAIT_MS
        return 0

    def _emit(self, frames: list[AudioFrame]) -> Audio:
        self.sent_ms += sum(f.milliseconds for f in frames)
        return Audio(join(frames))

    def _ptt(self, frame: AudioFrame, voiced: bool) -> list[VoiceEvent]:
        if self._ptt_started:
            return [self._emit([frame])]
        if not voiced:
            self.preroll.append(frame)  # leading silence beyond pre-roll is dropped
            return []
        self._ptt_started = True
        frames = [*self.preroll.take(), frame]
        return [SpeechStarted(frames[0].timestamp), self._emit(frames)]

    def _gated(self, frame: AudioFrame, voiced: bool) -> list[VoiceEvent]:
        ms = frame.milliseconds
        if self.state == "silence":
            if voiced:
                self.state, self._cand = "candidate", [frame]
                self._voiced_ms, self._gap_ms = ms, 0
                return self._maybe_start()
            self.preroll.append(frame)
            return []
        if self.state == "candidate":
            self._cand.append(frame)
            if voiced:
                self._voiced_ms += ms
                self._gap_ms = 0
                return self._maybe_start()
            self._gap_ms += ms
            if self._gap_ms >= CANDIDATE_GAP_MS:  # a burst: keep it as pre-roll only
                for f in self._cand:
                    self.preroll.append(f)
                self.state, self._cand = "silence", []
            return []
        # speech
        out: list[VoiceEvent] = [self._emit([frame])]
        if voiced:
            if self._silence_ms:  # a pause that did not end the turn
                self.pauses.append(self._silence_ms)
            self._silence_ms = 0
        else:
            self._silence_ms += ms
            if self._silence_ms >= self.hangover_ms:
                out.append(SpeechEnded(frame.end))
                self._spoke_until = frame.end - self._silence_ms / 1000
                self.state = "silence"
                self.preroll.clear()
        return out

    @property
    def hangover_ms(self) -> int:
        """The silence that ends speech now: ``vad.hangover_ms``, or (adaptive) longer for a
        speaker whose mid-sentence pauses came near it."""
        if not self.s.adaptive_hangover or not self.pauses:
            return self.s.hangover_ms
        learned = max(self.pauses) + PAUSE_MARGIN_MS
        return max(self.s.hangover_ms, min(HANGOVER_MAX_MS, learned))

    def _maybe_start(self) -> list[VoiceEvent]:
        if self._voiced_ms < max(self.s.min_speech_ms, MIN_VOICED_MS):
            return []
        onset = self._cand[0].timestamp
        if self._spoke_until is not None and (onset - self._spoke_until) * 1000 <= RESUMED_MS:
            # the user went on talking: the endpoint cut a pause (learn it, cut less from now)
            self.pauses.append(round((onset - self._spoke_until) * 1000))
        self._spoke_until = None
        frames = [*self.preroll.take(), *self._cand]
        self.state, self._cand = "speech", []
        self._silence_ms = 0
        return [SpeechStarted(frames[0].timestamp), self._emit(frames)]

    def _double_talk(self, frame: AudioFrame, speaker: Speaker) -> list[VoiceEvent]:
        """``frame`` is echo-cancelled (echo.mode aec): the policy weighs VAD and energy."""
        # a frame the canceller found to be its own echo, slipped under its filter, is no
        # one's voice: the policy hears it unvoiced (its level and record as they are)
        slipped = speaker.echo_slipped
        voiced = not slipped and self.is_speech(frame.audio)
        linear = None
        if len(speaker.echo_linear) == len(frame.audio):
            before = AudioFrame(speaker.echo_linear, RATE, timestamp=frame.timestamp)
            linear = (not slipped and self.linear_is_speech(before.audio), _energy(before))
        over = speaker.echo_over
        if self.barge_in.frame(
            frame.milliseconds,
            voiced,
            _energy(frame),
            speaker.echo_heard_s,
            speaker.echo_settled,
            speaker.echo_energy,
            linear,
            None if over is None or slipped else partial(over, frame.array()),
            speaker.echo_refitting,
        ):
            return [BargeIn(frame.end)]
        return []


def _check(frame: AudioFrame) -> None:
    """A frame the VAD cannot take is a wiring error: say what it is, not webrtcvad's words."""
    if (
        frame.rate != RATE
        or frame.width != 2
        or frame.channels != 1
        or frame.samples * 1000 not in {ms * RATE for ms in VAD_FRAME_MS}
    ):
        raise ValueError(
            f"the voice gate takes 16 kHz 16-bit mono frames of 10, 20 or 30 ms, got "
            f"{frame.rate} Hz {frame.width * 8}-bit ×{frame.channels} of {frame.samples} samples"
        )
