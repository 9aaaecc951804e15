"""A voice corpus generated on the spot: espeak-ng utterances with 300 ms internal pauses or
natural mid-sentence pauses (PAUSED_PHRASES), silences, quiet noise; echo = playback convolved with a room-like impulse response; and
double-talk = echo + user speech. Shared by the voice tests and bench/voice_quality.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from agentd.audio.frame import AudioFrame, chop
from agentd.audio.pcm import to_float, to_int16
from agentd.sim.speech import espeak_pcm

RATE = 16000
PHRASES = [
    "turn on the kitchen lights",
    "what is the weather tomorrow",
    "set a timer for ten minutes",
    "play some quiet music",
    "how far is the moon",
    "remind me to call my sister",
    "what time is it in tokyo",
    "add milk to the shopping list",
    "tell me a short story",
    "is the front door locked",
    "read me the news",
    "how do I boil an egg",
]


# Utterances with natural mid-sentence pauses: espeak-ng pauses ~150 ms at each comma; paused()
# lengthens each comma pause to a hesitation of PAUSE_MS (within-clause pauses of 150-350 ms).
PAUSED_PHRASES = [
    "turn on the kitchen lights, and then lock the front door",
    "if it rains tomorrow, remind me to take an umbrella",
    "call my sister, she wants to hear about the trip",
    "set an alarm for seven, no, make that half past six",
    "what is the capital of, um, australia",
    "play the song from, you know, that film we saw",
    "add eggs, butter, and flour to the list",
    "when does the bakery open, on sunday I mean",
]
PAUSE_MS = (150, 350)


@functools.cache
def speak(text: str) -> np.ndarray:
    """float32 speech at 16 kHz (espeak-ng, sox -R: deterministic)."""
    x = to_float(espeak_pcm(text, RATE))
    nz = np.flatnonzero(np.abs(x) > 0.01)  # trim espeak's own leading/trailing silence
    return x[nz[0] : nz[-1] + 1].copy()


def utterance(text: str, pause_ms: int = 300) -> np.ndarray:
    """Words of ``text`` in two halves with a ``pause_ms`` pause inside."""
    words = text.split()
    half = len(words) // 2
    gap = np.zeros(RATE * pause_ms // 1000, np.float32)
    return np.concatenate([speak(" ".join(words[:half])), gap, speak(" ".join(words[half:]))])


def paused(text: str, rng: np.random.Generator) -> np.ndarray:
    """``text`` said clause by clause (split at its commas), each pause a hesitation drawn
    from PAUSE_MS: the pauses a speaker makes mid-sentence, which must not end the turn."""
    parts: list[np.ndarray] = []
    for i, clause in enumerate(c.strip() for c in text.split(",")):
        if i:
            parts.append(
                np.zeros(RATE * int(rng.integers(*PAUSE_MS, endpoint=True)) // 1000, np.float32)
            )
        parts.append(speak(clause))
    return np.concatenate(parts)


def noise(n: int, rng: np.random.Generator, dbfs: float = -55) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


@dataclass
class Recording:
    audio: np.ndarray
    spans: list[tuple[int, int]] = field(default_factory=list)  # true speech [start, end)


def scene(
    texts: list[str],
    rng: np.random.Generator,
    lead_s: float = 1.0,
    gap_s: tuple[float, float] = (1.5, 3.0),
    tail_s: float = 1.5,
) -> Recording:
    """Utterances separated by silence, over quiet noise. A text with commas is said with
    natural pauses at them (:func:`paused`), any other with a 300 ms pause in the middle."""
    parts: list[np.ndarray] = [np.zeros(int(RATE * lead_s), np.float32)]
    spans, pos = [], parts[0].size
    for text in texts:
        u = paused(text, rng) if "," in text else utterance(text)
        spans.append((pos, pos + u.size))
        gap = np.zeros(int(RATE * rng.uniform(*gap_s)), np.float32)
        parts += [u, gap]
        pos += u.size + gap.size
    parts.append(np.zeros(int(RATE * tail_s), np.float32))
    audio = np.concatenate(parts)
    return Recording(audio + noise(audio.size, rng), spans)


def sparse_scene(
    rng: np.random.Generator, total_s: float = 60, speech_fraction: float = 0.1
) -> Recording:
    """A long hands-free recording where about ``speech_fraction`` is speech."""
    texts, speech = [], 0.0
    for i in range(100):
        t = PHRASES[i % len(PHRASES)]
        length = utterance(t).size / RATE
        if texts and speech + length > total_s * speech_fraction:
            break
        texts.append(t)
        speech += length
    rec = scene(texts, rng, lead_s=2.0, gap_s=(3.0, 3.0), tail_s=0.5)
    quiet = int(RATE * total_s) - rec.audio.size
    gap_each = max(0, quiet // max(1, len(texts)))
    parts, spans, pos, last = [], [], 0, 0
    for start, end in rec.spans:
        parts += [rec.audio[last:start], noise(gap_each, rng), rec.audio[start:end]]
        pos += (start - last) + gap_each
        spans.append((pos, pos + end - start))
        pos += end - start
        last = end
    parts.append(rec.audio[last:])
    return Recording(np.concatenate(parts), spans)


def room_ir(rng: np.random.Generator, rt60_s: float = 0.25, delay_ms: float = 8) -> np.ndarray:
    """A room-like impulse response: direct path after a small delay, then a decaying tail."""
    n = int(RATE * rt60_s)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s) * 0.3
    ir = np.zeros(int(RATE * delay_ms / 1000) + n, np.float32)
    ir[int(RATE * delay_ms / 1000)] = 1.0
    ir[int(RATE * delay_ms / 1000) :] += tail.astype(np.float32)
    return ir / np.sqrt(np.sum(ir**2))


def echo_of(playback: np.ndarray, level_db: float, rng: np.random.Generator) -> np.ndarray:
    e = np.convolve(playback, room_ir(rng))[: playback.size]
    return (e * 10 ** (level_db / 20)).astype(np.float32)


def frames(audio: np.ndarray, ms: int = 20) -> list[AudioFrame]:
    """The recording as microphone frames of ``ms``, the first captured at 0."""
    return chop(to_int16(audio), RATE, ms)
