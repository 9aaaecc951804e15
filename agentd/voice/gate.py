"""The voice pipeline: VAD pre-gating with pre-roll, local endpointing, echo suppression and
double-talk barge-in. Pure: 16 kHz frames and speaker facts in, decisions out.

Why each piece exists:
- pre-roll: webrtcvad needs a few frames to be sure, so the onset would be clipped without
  the ring of audio from just before it;
- min_speech_ms: clicks and coughs must not open a turn or cost uplink bytes;
- hangover: people pause inside sentences; only a longer silence ends the turn;
- echo suppression: the device must not hear itself, up to ``tail_ms`` after the last sample
  really left the speaker (reverb and the codec's own delay);
- double-talk: with ``barge_in: voice`` the user may talk over the answer, which is detected
  as mic energy well above what the measured echo coupling predicts from the playback level.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agentd.audio.pcm import to_float
from agentd.config import EchoSettings, VadSettings

RATE = 16000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
CANDIDATE_GAP_MS = 100  # an unvoiced gap this long abandons an onset candidate
BARGE_FRAMES = 3  # net voiced frames above the echo prediction needed to barge in
BARGE_MARGIN = 2.5  # mic energy must exceed the predicted echo energy by this factor (+4 dB)
MIN_BARGE_ENERGY = 1e-5  # (~ -50 dBFS) below this nothing counts as a barge-in
REVERB_DECAY = 0.6  # energy kept per 20 ms of reverberation (RT60 ≈ 0.27 s)
REF_WINDOW_S = 0.3  # echo path delay tolerance when matching playback to mic energy


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    mode: str  # push_to_talk | toggle | hands_free
    aggressiveness: int = 2
    preroll_ms: int = 300
    hangover_ms: int = 500
    min_speech_ms: int = 150
    echo_mode: str = "half_duplex"
    tail_ms: int = 250
    barge_in: str = "button"

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
        )


# --------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Audio:
    """Audio to send upstream (16 kHz int16); ``t`` is the capture time of its first frame."""

    pcm: bytes
    t: float


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    t: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Local endpoint: ``hangover_ms`` of non-speech after enough speech."""

    t: float


@dataclass(frozen=True, slots=True)
class BargeIn:
    t: float


VoiceEvent = Audio | SpeechStarted | SpeechEnded | BargeIn


@dataclass(frozen=True, slots=True)
class Speaker:
    """What the playback side knows at the moment a mic frame is processed."""

    busy: bool = False
    last_played_at: float = float("-inf")


class ReferenceTrack:
    """Energy of what the speaker plays, by the time it plays: the double-talk reference."""

    def __init__(self, keep_s: float = 5.0) -> None:
        self._track: deque[tuple[float, float]] = deque()
        self.keep_s = keep_s

    def add(self, samples: np.ndarray, rate: int, start: float) -> None:
        """``samples`` float32 mono that will start playing at ``start``."""
        step = rate * FRAME_MS // 1000
        for i in range(0, samples.size, step):
            seg = samples[i : i + step]
            self._track.append((start + i / rate, float(np.mean(seg * seg))))
        while self._track and self._track[0][0] < start - self.keep_s:
            self._track.popleft()

    def level(self, t: float) -> float:
        """Playback energy that can echo into a frame captured at ``t``: recent frames weighted
        by a reverberation-like decay, so the prediction follows the room's tail."""
        total = 0.0
        for when, e in self._track:
            if t - REF_WINDOW_S <= when <= t + FRAME_MS / 1000:
                total += e * REVERB_DECAY ** (max(0.0, t - when) / (FRAME_MS / 1000))
        return total * (1 - REVERB_DECAY)

    def clear(self) -> None:
        self._track.clear()


def _energy(frame: bytes) -> float:
    x = to_float(frame)
    return float(np.mean(x * x))


class VoiceGate:
    """One instance per session; :meth:`process` is called for every 20 ms mic frame."""

    def __init__(
        self,
        settings: VoiceSettings,
        is_speech: Callable[[bytes], bool] | None = None,
        reference: ReferenceTrack | None = None,
    ) -> None:
        self.s = settings
        if is_speech is None:
            import webrtcvad

            vad = webrtcvad.Vad(settings.aggressiveness)
            is_speech = lambda f: vad.is_speech(f, RATE)  # noqa: E731
        self.is_speech = is_speech
        self.reference = reference or ReferenceTrack()
        self.preroll = deque[tuple[bytes, float]](maxlen=max(1, settings.preroll_ms // FRAME_MS))
        self.ptt_held = False
        self.state = "silence"  # silence | candidate | speech
        self._cand: list[tuple[bytes, float]] = []
        self._voiced_ms = 0
        self._gap_ms = 0
        self._silence_ms = 0
        self._ptt_started = False
        self.sent_ms = 0  # audio sent in the current turn
        self.coupling = 1.0  # echo energy / playback energy: starts pessimistic, learned
        self._barge_run = 0
        self.suppressed_frames = 0

    # ---------------------------------------------------------------- push-to-talk

    def press(self) -> None:
        """Button down in push_to_talk: send from the first speech, with pre-roll."""
        self.ptt_held, self._ptt_started, self.sent_ms = True, False, 0

    def release(self) -> list[VoiceEvent]:
        self.ptt_held = False
        return []

    def new_turn(self) -> None:
        self.sent_ms = 0

    def reset(self) -> None:
        self.state, self._cand = "silence", []
        self._voiced_ms = self._gap_ms = self._silence_ms = 0
        self.preroll.clear()

    # ---------------------------------------------------------------- frames

    def echo_guard(self, now: float, speaker: Speaker) -> bool:
        """True while the mic must stay closed (half-duplex, including the tail)."""
        if self.s.echo_mode == "off":
            return False
        if self.ptt_held:  # the button says the user talks: only a playing cue is held back
            return speaker.busy
        return speaker.busy or now < speaker.last_played_at + self.s.tail_ms / 1000

    def process(self, frame: bytes, now: float, speaker: Speaker = Speaker()) -> list[VoiceEvent]:
        if self.echo_guard(now, speaker):
            self.suppressed_frames += 1
            self.reset()
            if self.s.barge_in == "voice":
                return self._double_talk(frame, now, speaker)
            return []
        self._barge_run = 0
        voiced = self.is_speech(frame)
        if self.s.mode == "push_to_talk":
            return self._ptt(frame, now, voiced)
        return self._gated(frame, now, voiced)

    def _emit(self, frames: list[tuple[bytes, float]]) -> Audio:
        self.sent_ms += FRAME_MS * len(frames)
        return Audio(b"".join(f for f, _ in frames), frames[0][1])

    def _ptt(self, frame: bytes, now: float, voiced: bool) -> list[VoiceEvent]:
        if not self.ptt_held:
            self.preroll.append((frame, now))
            return []
        if self._ptt_started:
            return [self._emit([(frame, now)])]
        if not voiced:
            self.preroll.append((frame, now))  # leading silence beyond pre-roll is dropped
            return []
        self._ptt_started = True
        frames = [*self.preroll, (frame, now)]
        self.preroll.clear()
        return [SpeechStarted(frames[0][1]), self._emit(frames)]

    def _gated(self, frame: bytes, now: float, voiced: bool) -> list[VoiceEvent]:
        if self.state == "silence":
            if voiced:
                self.state, self._cand = "candidate", [(frame, now)]
                self._voiced_ms, self._gap_ms = FRAME_MS, 0
                return self._maybe_start(now)
            self.preroll.append((frame, now))
            return []
        if self.state == "candidate":
            self._cand.append((frame, now))
            if voiced:
                self._voiced_ms += FRAME_MS
                self._gap_ms = 0
                return self._maybe_start(now)
            self._gap_ms += FRAME_MS
            if self._gap_ms >= CANDIDATE_GAP_MS:  # a burst: keep it as pre-roll only
                for f in self._cand:
                    self.preroll.append(f)
                self.state, self._cand = "silence", []
            return []
        # speech
        out: list[VoiceEvent] = [self._emit([(frame, now)])]
        if voiced:
            self._silence_ms = 0
        else:
            self._silence_ms += FRAME_MS
            if self._silence_ms >= self.s.hangover_ms:
                out.append(SpeechEnded(now))
                self.state = "silence"
                self.preroll.clear()
        return out

    def _maybe_start(self, now: float) -> list[VoiceEvent]:
        if self._voiced_ms < max(self.s.min_speech_ms, 2 * FRAME_MS):
            return []
        frames = [*self.preroll, *self._cand]
        self.preroll.clear()
        self.state, self._cand = "speech", []
        self._silence_ms = 0
        return [SpeechStarted(frames[0][1]), self._emit(frames)]

    def _double_talk(self, frame: bytes, now: float, speaker: Speaker) -> list[VoiceEvent]:
        mic = _energy(frame)
        ref = self.reference.level(now)
        predicted = self.coupling * ref
        loud = mic > max(MIN_BARGE_ENERGY, BARGE_MARGIN * predicted)
        if loud and self.is_speech(frame):
            self._barge_run += 1
        else:
            self._barge_run = max(0, self._barge_run - 1)
            if ref > 1e-4 and not loud:  # echo only: track the loudest coupling seen
                ratio = mic / ref  # (fast rise, slow fall: quiet frames must not lower it)
                rate = 0.3 if ratio > self.coupling else 0.03
                self.coupling += rate * (ratio - self.coupling)
        if self._barge_run >= BARGE_FRAMES:
            self._barge_run = 0
            return [BargeIn(now)]
        return []
