"""Wake word: a pure policy (ring buffer, debounce, where the word ended) and a thin adapter
around the on-device detector (microWakeWord through ``pymicro-wakeword``, extra ``agentd[wake]``).

Why each piece exists:
- the ring buffer: the detector is sure of the word only 0.1–0.3 s after it ended, often
  after the command has begun ("okay nabu what's the weather" in one breath), so the turn's
  audio is taken from the ring, starting where the word ended, never at the detection;
- the refractory period: the model says "yes" for up to nine steps in a row for one word;
- the noise suppressor in front of the detector (``wake.noise_suppression``): the model's own
  front end takes out steady noise but not speech-like noise; WebRTC's suppressor first raised
  recall at 10 dB SNR from 51% to 67% on the corpus (babble 27% → 46%) with no false accept
  (``bench/wake_word.py``). It cleans only what the detector hears: the ring, hence the turn's
  audio, is the microphone path's own (``audio.input.noise_suppression``);
- the word's end is estimated from the detection time minus the detector's typical lag
  (measured by ``bench/wake_word.py``), moved to the quietest 10 ms nearby, where a word
  boundary is most likely: the word itself never reaches the server.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agentd.audio.frame import AudioFrame, chop
from agentd.config import WakeSettings

RATE = 16000
BUILTIN_WORDS = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")
RING_S = 4.0  # audio kept: the longest lag plus a command's start, with room to spare
#: median lag of a detection after the word's end on the corpus (bench/wake_word.py)
LAG_S = 0.16
SNAP_S = 0.1  # the word's end is looked for this far either side of detection - LAG_S
SNAP_STEP_S = 0.01
EXTRA = "pip install 'agentd[wake]'"


@dataclass(frozen=True, slots=True)
class Score:
    """One detector step: ``p`` for ``word`` on the audio up to ``t`` (capture clock)."""

    word: str
    p: float
    t: float


@dataclass(frozen=True, slots=True)
class Wake:
    """The word was heard: detected at ``t``; the turn's audio starts at ``word_end``."""

    word: str
    t: float
    word_end: float


class Detector(Protocol):
    """What the policy needs of an engine: scores for 16 kHz frames, and a fresh start."""

    def process(self, frame: AudioFrame) -> list[Score]: ...

    def reset(self) -> None: ...


class WakePolicy:
    """Pure: frames and scores in, at most one :class:`Wake` per ``refractory_s`` out."""

    def __init__(self, cutoff: float, refractory_s: float, ring_s: float = RING_S) -> None:
        self.cutoff, self.refractory_s, self.ring_s = cutoff, refractory_s, ring_s
        self.ring: deque[AudioFrame] = deque()
        self.quiet_until = float("-inf")

    def push(self, frame: AudioFrame) -> None:
        """Keep ``frame`` in the ring (every frame, heard by the detector or not)."""
        self.ring.append(frame)
        while self.ring and self.ring[0].end < frame.end - self.ring_s:
            self.ring.popleft()

    def judge(self, scores: Iterable[Score]) -> Wake | None:
        for s in scores:
            if s.p > self.cutoff and s.t >= self.quiet_until:
                self.quiet_until = s.t + self.refractory_s
                return Wake(s.word, s.t, self.word_end(s.t))
        return None

    def word_end(self, t: float) -> float:
        """Where the word most likely ended: ``t - LAG_S`` moved to the quietest 10 ms within
        ``SNAP_S``, never later than ``t`` and never before the ring."""
        guess = t - LAG_S
        frames = [f for f in self.ring if f.end > guess - SNAP_S and f.timestamp < guess + SNAP_S]
        if not frames:
            return guess
        start = frames[0].timestamp
        x = np.concatenate([np.frombuffer(f.audio, "<i2") for f in frames]).astype(np.float64)
        step = int(SNAP_STEP_S * RATE)
        best, best_e = guess, float("inf")
        for i in range(0, len(x) - step + 1, step // 2):
            mid = start + (i + step / 2) / RATE
            if abs(mid - guess) > SNAP_S or mid > t:
                continue
            e = float(np.mean(x[i : i + step] ** 2)) * (1 + abs(mid - guess) / SNAP_S)
            if e < best_e:
                best, best_e = mid, e
        return best

    def since(self, t: float) -> list[AudioFrame]:
        """The ring's audio from ``t`` on, as 10 ms frames (the voice gate's unit): the frame
        holding ``t`` is cut at the 10 ms step nearest to it."""
        step = int(SNAP_STEP_S * RATE)
        out: list[AudioFrame] = []
        for f in self.ring:
            if f.end <= t:
                continue
            skip = 0
            if f.timestamp < t:
                skip = min(f.samples, round((t - f.timestamp) * RATE / step) * step)
            start = f.timestamp + skip / RATE
            out += chop(f.audio[skip * 2 :], RATE, 10, start=start, tail=True)
        return out


class WakeListener:
    """The policy and its detector for the service: every frame goes in (so the ring is
    whole), the detector only hears those ``heard`` (not while the speaker may echo); after a
    pause or a detection it starts afresh (its sliding window holds old audio).
    ``mic_suppressed``: the microphone path already suppresses noise, so the detector gets
    no second suppressor."""

    def __init__(
        self,
        settings: WakeSettings,
        detector: Detector | None = None,
        mic_suppressed: bool = False,
    ) -> None:
        self.settings, self.mic_suppressed = settings, mic_suppressed
        self.detector = detector or make_detector(settings, mic_suppressed)
        self.policy = WakePolicy(settings.sensitivity, settings.refractory_s)
        self._fresh = True
        self.detections = 0

    def process(self, frame: AudioFrame, heard: bool = True) -> Wake | None:
        """Judge ``frame``, then keep it: the ring holds the audio *before* it, so a turn
        replayed from the ring and then continued with ``frame`` has every sample once."""
        wake = None
        if heard:
            if not self._fresh:
                self.detector.reset()
                self._fresh = True
            wake = self.policy.judge(self.detector.process(frame))
            if wake is not None:
                self.detections += 1
                self.pause()
        else:
            self.pause()
        self.policy.push(frame)
        return wake

    def pause(self) -> None:
        """The detector missed audio (muted, echo): reset it before it hears again."""
        self._fresh = False

    def since(self, t: float) -> list[AudioFrame]:
        return self.policy.since(t)


# --------------------------------------------------------------------- the engine


def model_paths(settings: WakeSettings) -> list[Path]:
    """The model JSONs the settings name: a custom one, or the bundled words."""
    if settings.model is not None:
        return [Path(settings.model)]
    import pymicro_wakeword

    models = Path(pymicro_wakeword.__file__).parent / "models"
    return [models / f"{w}.json" for w in settings.words]


def make_detector(settings: WakeSettings, mic_suppressed: bool = False) -> Detector:
    """The engine, behind its own noise suppressor when ``wake.noise_suppression`` asks for
    one and the microphone path has none."""
    det: Detector = MicroDetector(settings)
    if settings.noise_suppression and not mic_suppressed:
        det = Suppressed(det, settings.noise_suppression)
    return det


class Suppressed:
    """A detector hearing its frames through WebRTC noise suppression (agentd/audio/echo.py's
    chain with only the suppressor on); the suppressor keeps its noise estimate across the
    detector's resets, as the noise outlasts them."""

    def __init__(self, detector: Detector, level: int) -> None:
        from agentd.audio import echo

        self.detector = detector
        self.suppressor = echo.EchoCanceller(echo.EchoSetup(noise_suppression=level))

    def process(self, frame: AudioFrame) -> list[Score]:
        return self.detector.process(self.suppressor.process(frame))

    def reset(self) -> None:
        self.detector.reset()


class MicroDetector:
    """microWakeWord models sharing one feature front end; runs in the caller's thread (the
    TFLite C interpreter is built with one thread)."""

    def __init__(self, settings: WakeSettings) -> None:
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures

        self.models = [MicroWakeWord.from_config(p) for p in model_paths(settings)]
        self.names = [Path(str(m.tflite_model)).stem for m in self.models]
        self.features = MicroWakeWordFeatures()
        self._fed = 0  # feature windows fed since the last reset

    def process(self, frame: AudioFrame) -> list[Score]:
        """A score for each model at each inference (every ``stride`` 10 ms windows); the
        library's placeholder 0.0 between inferences is no score and is left out."""
        out: list[Score] = []
        for feats in self.features.process_streaming(frame.audio):
            self._fed += 1
            for name, model in zip(self.names, self.models, strict=True):
                p = model.process_streaming_prob(feats)
                if p is not None and self._fed % model.stride == 0:
                    out.append(Score(name, p, frame.end))
        return out

    def reset(self) -> None:
        self.features.reset()
        self._fed = 0
        for m in self.models:
            m.reset()


# --------------------------------------------------------------------- check-config


def problems(turn_mode: str, wake: WakeSettings, follow_up_s: float) -> list[str]:
    """What keeps the wake settings from working on this device, each with what to do."""
    out: list[str] = []
    if follow_up_s > 0 and turn_mode != "wake_word":
        out.append(
            f"turn.follow_up_s: only used with turn.mode: wake_word (got mode {turn_mode}; "
            "toggle keeps listening for turn.idle_timeout_s)"
        )
    if turn_mode != "wake_word":
        return out
    if wake.engine == "open":
        return [*out, "wake.engine: open (openWakeWord) is not offered in this build; use micro"]
    if wake.model is None:
        if not wake.words:
            out.append(f"wake.words: name at least one word ({', '.join(BUILTIN_WORDS)})")
        for i, w in enumerate(wake.words):
            if w not in BUILTIN_WORDS:
                out.append(
                    f"wake.words[{i}]: unknown word {w!r} (bundled: {', '.join(BUILTIN_WORDS)})"
                )
    else:
        out += _model_problems(wake.model)
    try:
        import pymicro_wakeword  # noqa: F401
    except ImportError:
        out.append(f"wake.engine: micro needs pymicro-wakeword: {EXTRA}")
    from agentd.audio import echo

    if wake.noise_suppression and not echo.available():
        out.append(
            f"wake.noise_suppression: {wake.noise_suppression} needs the WebRTC audio "
            f"processing library, which is not installed: {EXTRA} (or set it to 0)"
        )
    return out


def _model_problems(model: str) -> list[str]:
    if not model.startswith("/"):
        return [f"wake.model: must be an absolute path (got {model!r}); the service runs in /"]
    path = Path(model)
    try:
        spec: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        return [f"wake.model: cannot read {model}: {e.strerror or e}"]
    except ValueError:
        return [f"wake.model: {model} is not JSON (a microWakeWord model's .json)"]
    if not isinstance(spec, dict) or spec.get("type") != "micro" or "micro" not in spec:
        kind = spec.get("type") if isinstance(spec, dict) else None
        return [
            f"wake.model: {model} is not a microWakeWord model (type {kind!r}); "
            "openWakeWord models are not offered in this build"
        ]
    tflite = path.parent / str(spec.get("model", ""))
    if not tflite.is_file():
        return [f"wake.model: the model file {tflite} named in {model} is missing"]
    return []
