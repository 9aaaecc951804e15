"""The wake-word corpus: synthetic speech from Debian's engines, built reproducibly and cached.

    .venv/bin/python bench/wake_corpus.py [--dir bench/.wake_corpus] [--negative-min 66]

Positives ("okay nabu") from espeak-ng, flite and festival voices at several rates and pitches,
said alone, as a command after a pause, and as a command in one breath; each in eight
conditions: clean, reverberant (RT60 0.3 s), babble and broadband noise at 20, 10 and 5 dB
SNR. Negatives: over an hour of varied speech (licence texts and everyday requests, many with
"okay"), babble and noise; plus near-miss phrases. Every random choice is seeded and every
engine is deterministic, so a rebuild gives the same samples; the cache directory is keyed by
CORPUS_VERSION and never committed (see .gitignore).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from agentd.audio.pcm import to_float, to_int16
from agentd.sim.speech import wav_pcm

RATE = 16000
CORPUS_VERSION = 4
HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / ".wake_corpus"
WAKE = "okay nabu"
COMMANDS = [
    "what's the weather like today",
    "turn on the kitchen light",
    "set a timer for five minutes",
    "play some music in the living room",
    "what time is it",
    "how tall is the eiffel tower",
]
NEAR_MISSES = [
    "okay navy",
    "okay now",
    "okay nobody",
    "hey nabu",
    "okay google",
    "oh canoe",
    "okay nana",
    "okay maybe",
    "okay new boots",
    "a kabuki",
]
PAUSE_S = 0.4
CONDITIONS = [
    "clean",
    "reverb",
    "babble20",
    "babble10",
    "babble5",
    "noise20",
    "noise10",
    "noise5",
]
RT60_S = 0.3


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak | flite | festival
    name: str
    rate: float  # espeak: words/min; flite/festival: duration stretch
    pitch: float  # espeak: 0..99; flite: mean F0 (Hz); festival: unused (0)

    @property
    def key(self) -> str:
        return f"{self.engine}-{self.name}-r{self.rate:g}-p{self.pitch:g}"


def voices() -> list[Voice]:
    out = [
        Voice("espeak", v, r, p)
        for v in ("en-us", "en", "en-us+m3", "en+m7")
        for r in (140, 175, 210)
        for p in (35, 50, 65)
    ]
    out += [Voice("espeak", v, 175, 50) for v in ("en-us+f2", "en+f4")]
    out += [
        Voice("flite", v, r, p)
        for v in ("kal", "kal16", "awb", "rms", "slt")
        for r in (0.85, 1.0, 1.2)
        for p in (0, 1)
    ]
    out += [Voice("festival", v, r, 0) for v in ("kal", "ked") for r in (0.85, 1.0, 1.2)]
    return out


# --------------------------------------------------------------------- synthesis


def _to16k(wav: Path) -> np.ndarray:
    return to_float(np.frombuffer(wav_pcm(wav, RATE), "<i2"))


def synth(voice: Voice, text: str) -> np.ndarray:
    """``text`` said by ``voice``, float32 at 16 kHz, without leading/trailing silence."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp, "s.wav")
        txt = Path(tmp, "t.txt")  # a file: text starting with "-" is no option
        txt.write_text(text + "\n")
        if voice.engine == "espeak":
            cmd = [
                "espeak-ng",
                "-v",
                voice.name,
                "-s",
                f"{voice.rate:g}",
                "-p",
                f"{voice.pitch:g}",
                "-w",
                str(wav),
                "-f",
                str(txt),
            ]
            subprocess.run(cmd, check=True, capture_output=True)
        elif voice.engine == "flite":
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={voice.rate:g}"]
            if voice.pitch:
                cmd += ["--setf", "int_f0_target_mean=130"]
            subprocess.run([*cmd, "-f", str(txt), "-o", str(wav)], check=True, capture_output=True)
        else:
            scm = Path(tmp, "v.scm")
            scm.write_text(
                f"(voice_{voice.name}_diphone)\n(Parameter.set 'Duration_Stretch {voice.rate:g})\n"
            )
            subprocess.run(
                ["text2wave", "-eval", str(scm), str(txt), "-o", str(wav)],
                check=True,
                capture_output=True,
            )
        if not wav.exists() or wav.stat().st_size <= 44:
            return np.zeros(0, np.float32)
        return trim(_to16k(wav))


def trim(x: np.ndarray, floor: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > floor)
    return x[loud[0] : loud[-1] + 1] if len(loud) else x


# --------------------------------------------------------------------- conditions


def rir(rng: np.random.Generator, rt60: float = RT60_S) -> np.ndarray:
    """A synthetic room impulse response: the direct path, then exponentially decaying
    noise that falls 60 dB in ``rt60`` (early reflections from 5 ms)."""
    n = int(rt60 * 1.2 * RATE)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60) * 0.25
    tail[: int(0.005 * RATE)] = 0
    tail[0] = 1.0
    return tail.astype(np.float32)


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x) + len(h) // 2]
    return (y * (np.sqrt(np.mean(x**2)) / max(1e-9, np.sqrt(np.mean(y**2))))).astype(np.float32)


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec))
    spec[1:] /= np.sqrt(f[1:])
    y = np.fft.irfft(spec, n)
    return (y / np.sqrt(np.mean(y**2))).astype(np.float32)


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``noise`` scaled so the speech's power is ``snr_db`` above it."""
    ps = np.mean(trim(speech) ** 2)
    pn = np.mean(noise[: len(speech)] ** 2) + 1e-12
    gain = np.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    return (speech + gain * noise[: len(speech)]).astype(np.float32)


def condition(x: np.ndarray, cond: str, rng: np.random.Generator, babble: np.ndarray) -> np.ndarray:
    if cond == "clean":
        return x
    if cond == "reverb":
        return convolve(x, rir(rng))
    snr = float(cond[-2:] if cond[-2:].isdigit() else cond[-1])
    if cond.startswith("babble"):
        start = int(rng.integers(0, len(babble) - len(x)))
        noise = babble[start : start + len(x)]
    else:
        noise = pink(rng, len(x))
    return mix(x, noise, snr)


# --------------------------------------------------------------------- the corpus


@dataclass
class Clip:
    file: str
    kind: str  # isolated | pause | breath | near | negative
    voice: str
    engine: str
    condition: str
    text: str
    word_end: float | None  # seconds from the start of the file (None: not known)
    seconds: float
    segments: list[tuple[float, str]] | None = None  # negatives: (start s, sentence)


LEAD_S, TAIL_S = 0.6, 0.8


def _write(dirpath: Path, name: str, x: np.ndarray) -> float:
    y = np.frombuffer(to_int16(x), "<i2")
    y.tofile(dirpath / name)
    return len(y) / RATE


def _pad(x: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.zeros(int(LEAD_S * RATE), np.float32), x, np.zeros(int(TAIL_S * RATE), np.float32)]
    )


OKAY_REQUESTS = "okay … requests"  # the near-miss label of everyday requests starting with okay


def requests(starts: list[str], n: int, seed: int) -> list[str]:
    """Everyday requests to a person in the room (seeded, so always the same)."""
    rng = random.Random(seed)
    things = [
        "the kettle",
        "my keys",
        "dinner",
        "the news",
        "a taxi",
        "the bus",
        "the lights",
        "grandma",
        "the game",
        "my phone",
        "the garden",
        "a nap",
        "the window",
    ]
    verbs = [
        "where is",
        "let's check",
        "don't forget",
        "I need",
        "can you find",
        "call",
        "we should fix",
        "turn off",
        "who moved",
        "bring me",
    ]
    return [f"{rng.choice(starts)}, {rng.choice(verbs)} {rng.choice(things)}" for _ in range(n)]


def sentences() -> list[str]:
    """Varied English from files every Debian system has, plus everyday requests (many
    starting with "okay", the riskiest word for this model); seeded, so always the same."""
    text = ""
    for name in ("GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-3", "Artistic", "GFDL-1.3", "CC0-1.0"):
        text += Path("/usr/share/common-licenses", name).read_text(errors="replace") + "\n"
    words = [w for w in text.replace("\n", " ").split(" ") if w.isascii()]
    out, cur = [], []
    for w in words:
        cur.append(w)
        if len(cur) >= 14 or (w.endswith(".") and len(cur) > 5):
            out.append(" ".join(cur))
            cur = []
    out += requests(["alright", "hey", "so", "well", "no", "yes", "right", "oh"], 900, 23)
    random.Random(23).shuffle(out)
    return out


def build(dirpath: Path, negative_min: float, jobs: int = 2) -> list[Clip]:
    """Build (or reuse) the corpus in ``dirpath``; returns its manifest."""
    manifest = dirpath / "manifest.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        if meta["version"] == CORPUS_VERSION and meta["negative_min"] >= negative_min:
            return [Clip(**c) for c in meta["clips"]]
    if dirpath.exists():
        shutil.rmtree(dirpath)
    dirpath.mkdir(parents=True)
    clips: list[Clip] = []
    vs = voices()
    babble = _babble(vs)
    with ThreadPoolExecutor(jobs) as pool:
        for got in pool.map(lambda iv: _positives(dirpath, iv[0], iv[1], babble), enumerate(vs)):
            clips += got
        for got in pool.map(lambda iv: _near(dirpath, iv[0], iv[1]), enumerate(vs)):
            clips += got
    clips += _negatives(dirpath, vs, babble, negative_min, jobs)
    manifest.write_text(
        json.dumps(
            {
                "version": CORPUS_VERSION,
                "negative_min": negative_min,
                "clips": [asdict(c) for c in clips],
            }
        )
    )
    return clips


def _babble(vs: list[Voice]) -> np.ndarray:
    """Six talkers at once (voices and texts not used for the positives' words)."""
    s = sentences()[:60]
    talkers = []
    for k in range(6):
        v = vs[(k * 7) % len(vs)]
        talkers.append(np.concatenate([synth(v, t) for t in s[k * 10 : k * 10 + 10]]))
    n = min(len(t) for t in talkers)
    b = sum(t[:n] / np.sqrt(np.mean(t[:n] ** 2)) for t in talkers)
    return (b / np.sqrt(np.mean(b**2))).astype(np.float32)


def _positives(dirpath: Path, i: int, v: Voice, babble: np.ndarray) -> list[Clip]:
    rng = np.random.default_rng(1000 + i)
    word = synth(v, WAKE)
    command = COMMANDS[i % len(COMMANDS)]
    cmd = synth(v, command)
    breath = synth(v, f"{WAKE} {command}")
    forms = {
        "isolated": (_pad(word), LEAD_S + len(word) / RATE, WAKE),
        "pause": (
            _pad(np.concatenate([word, np.zeros(int(PAUSE_S * RATE), np.float32), cmd])),
            LEAD_S + len(word) / RATE,
            f"{WAKE}, {command}",
        ),
        "breath": (_pad(breath), None, f"{WAKE} {command}"),
    }
    out = []
    for kind, (x, word_end, text) in forms.items():
        for cond in CONDITIONS:
            y = condition(x, cond, rng, babble)
            name = f"{kind}-{cond}-{v.key}.raw"
            secs = _write(dirpath, name, y)
            out.append(Clip(name, kind, v.key, v.engine, cond, text, word_end, secs))
    return out


def _near(dirpath: Path, i: int, v: Voice) -> list[Clip]:
    out = []
    for j, said in enumerate(requests(["okay", "okay so", "okay now"], 2, 500 + i)):
        name = f"near-okay-{j}-{v.key}.raw"
        secs = _write(dirpath, name, _pad(synth(v, said)))
        out.append(
            Clip(name, "near", v.key, v.engine, "clean", OKAY_REQUESTS, None, secs, [(0.0, said)])
        )
    for j, phrase in enumerate(NEAR_MISSES):
        name = f"near-{j}-{v.key}.raw"
        secs = _write(dirpath, name, _pad(synth(v, phrase)))
        out.append(Clip(name, "near", v.key, v.engine, "clean", phrase, None, secs))
    return out


def _negatives(
    dirpath: Path, vs: list[Voice], babble: np.ndarray, minutes: float, jobs: int
) -> list[Clip]:
    """Ten-minute files of speech from rotating voices with pauses, some under noise, plus
    stretches of babble and pink noise alone, until ``minutes`` are reached."""
    rng = random.Random(230)
    texts = sentences()
    chunks: list[tuple[int, list[tuple[Voice, str]]]] = []
    k, i = 0, 0
    target_s = minutes * 60 * 0.9  # the rest: babble and noise alone
    est = 0.0
    while est < target_s:
        batch = []
        for _ in range(120):
            v = vs[rng.randrange(len(vs))]
            if v.engine == "festival" and rng.random() < 0.5:  # slow to synthesize
                v = vs[rng.randrange(len(vs) - 6)]
            batch.append((v, texts[i % len(texts)]))
            i += 1
        chunks.append((k, batch))
        est += 120 * 4.2  # about 4 s a sentence with its pause
        k += 1

    def render(item: tuple[int, list[tuple[Voice, str]]]) -> Clip:
        n, batch = item
        r = np.random.default_rng(5000 + n)
        parts, segments, at = [], [], 0.0
        for v, t in batch:
            try:
                said = synth(v, t)
            except subprocess.CalledProcessError:
                continue  # an engine that cannot say this sentence: the same on every run
            segments.append((round(at, 3), f"{v.key}: {t}"))
            gap = np.zeros(int(r.uniform(0.2, 1.5) * RATE), np.float32)
            parts += [said, gap]
            at += (len(said) + len(gap)) / RATE
        x = np.concatenate(parts)
        if n % 3 == 1:
            x = mix(x, pink(r, len(x)), 15)
        elif n % 3 == 2:
            x = convolve(x, rir(r))
        name = f"negative-speech-{n:02d}.raw"
        secs = _write(dirpath, name, x)
        return Clip(
            name,
            "negative",
            "mixed",
            "mixed",
            ("clean", "noise15", "reverb")[n % 3],
            "",
            None,
            secs,
            segments,
        )

    with ThreadPoolExecutor(jobs) as pool:
        out = list(pool.map(render, chunks))
    r = np.random.default_rng(77)
    noise_s = minutes * 60 * 0.1
    b = np.tile(babble, int(noise_s / 2 / (len(babble) / RATE)) + 1)[: int(noise_s / 2 * RATE)]
    secs = _write(dirpath, "negative-babble.raw", 0.1 * b)
    out.append(Clip("negative-babble.raw", "negative", "babble", "mixed", "babble", "", None, secs))
    p = pink(r, int(noise_s / 2 * RATE)) * 0.05
    secs = _write(dirpath, "negative-pink.raw", p)
    out.append(Clip("negative-pink.raw", "negative", "pink", "mixed", "noise", "", None, secs))
    return out


def iter_files(clips: list[Clip], kind: str) -> Iterator[Clip]:
    return (c for c in clips if c.kind == kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--negative-min", type=float, default=66.0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    clips = build(a.dir, a.negative_min, a.jobs)
    by: dict[str, float] = {}
    for c in clips:
        by[c.kind] = by.get(c.kind, 0.0) + c.seconds
    print(json.dumps({k: round(v / 60, 1) for k, v in by.items()}), "minutes in", a.dir)


if __name__ == "__main__":
    main()
