"""Why the wake word fails in babble: the corpus's words under babble built three ways.

    .venv/bin/python bench/wake_babble.py [--snr 10]

The corpus (bench/wake_corpus.py) builds its babble from six talkers that are all espeak-ng
male voices (the same voice settings as six of its 74 positives), each talking without a
pause. This script mixes the corpus's clean positives (alone, after a pause, one breath) with
that babble and with two others, at the same SNR by the corpus's own rule (wake_corpus.mix:
speech power over the trimmed utterance against the babble's over the same span):
- ``corpus``: the corpus's babble, as built;
- ``engines``: six talkers, two per engine (espeak-ng, flite, festival), with the pauses
  between sentences that the negatives have (0.2–1.5 s);
- ``strangers``: six talkers with those pauses whose voices no positive uses (espeak-ng
  accents and a flite voice left out of the positives): babble is other people.
For each, recall at the shipped cutoff through the detector path with and without
wake.noise_suppression, and the active-speech level of the positives against the corpus's
level rule (does the rule make babble louder or quieter than the usual definition?).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from wake_corpus import (
    DEFAULT_DIR,
    RATE,
    Voice,
    _babble,
    build,
    mix,
    sentences,
    synth,
    trim,
    voices,
)

from agentd.audio.frame import chop
from agentd.audio.pcm import to_float, to_int16
from agentd.config import WakeSettings
from agentd.voice import wake as wk

FORMS = ("isolated", "pause", "breath")
SHIPPED = WakeSettings()
ENGINES = [
    Voice("espeak", "en-us", 175, 50),
    Voice("espeak", "en+m7", 175, 50),
    Voice("flite", "kal16", 1.0, 0),
    Voice("flite", "slt", 1.0, 0),
    Voice("festival", "kal", 1.0, 0),
    Voice("festival", "ked", 1.0, 0),
]
STRANGERS = [
    Voice("espeak", "en-gb-scotland", 160, 45),
    Voice("espeak", "en-029", 180, 55),
    Voice("espeak", "en-us-nyc", 190, 40),
    Voice("espeak", "en-gb-x-rp+f3", 170, 60),
    Voice("espeak", "en-gb-x-gbclan+m4", 150, 50),
    Voice("flite", "awb_time", 1.0, 0),
]


def paused_babble(talkers: list[Voice], seed: int) -> np.ndarray:
    """Each talker says ten sentences (not the corpus babble's) with 0.2–1.5 s pauses."""
    rng = random.Random(seed)
    texts = [t for t in sentences() if "okay" not in t.lower()][60:120]
    tracks = []
    for k, v in enumerate(talkers):
        parts = []
        for t in texts[k * 10 : k * 10 + 10]:
            said = synth(v, t)
            if len(said) == 0:  # awb_time says only times; it falls back to awb's words
                said = synth(Voice("flite", "awb", 0.9, 1), t)
            parts += [said, np.zeros(int(rng.uniform(0.2, 1.5) * RATE), np.float32)]
        tracks.append(np.concatenate(parts))
    n = min(len(t) for t in tracks)
    b = sum(t[:n] / np.sqrt(np.mean(t[:n] ** 2)) for t in tracks)
    return (b / np.sqrt(np.mean(b**2))).astype(np.float32)


def active_level_gap(x: np.ndarray) -> float:
    """dB by which the speech's active level (10 ms frames within 30 dB of the loudest, a
    simple stand-in for ITU-T P.56) exceeds the corpus's level (mean over the trimmed span)."""
    y = trim(x)
    frames = y[: len(y) // 160 * 160].reshape(-1, 160)
    e = np.mean(frames**2, axis=1)
    active = e[e > e.max() * 1e-3]
    return float(10 * np.log10(np.mean(active) / np.mean(y**2)))


def _peak(item: tuple[bytes, int]) -> float:
    pcm, ns = item
    det = wk.make_detector(WakeSettings(noise_suppression=ns))
    return max(
        (s.p for f in chop(pcm, RATE, 20, start=0.0) for s in det.process(f)),
        default=0.0,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--snr", type=float, default=10.0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv if argv is not None else [])
    build(a.dir, 66.0, a.jobs)
    vs = voices()
    babbles = {
        "corpus": _babble(vs),
        "engines": paused_babble(ENGINES, 7),
        "strangers": paused_babble(STRANGERS, 8),
    }
    items, keys, gaps = [], [], []
    for i, v in enumerate(vs):
        for form in FORMS:
            x = to_float(np.fromfile(a.dir / f"{form}-clean-{v.key}.raw", "<i2"))
            if form == "isolated":
                gaps.append(active_level_gap(x))
            for name, b in babbles.items():
                rng = np.random.default_rng(1000 + i)
                start = int(rng.integers(0, len(b) - len(x)))
                y = to_int16(np.clip(mix(x, b[start : start + len(x)], a.snr), -1, 1))
                for ns in (0, SHIPPED.noise_suppression):
                    items.append((y, ns))
                    keys.append((name, ns, form, v.engine))
    with ProcessPoolExecutor(a.jobs) as pool:
        peaks = list(pool.map(_peak, items, chunksize=16))
    hits: dict[tuple[str, int], list[bool]] = defaultdict(list)
    by: dict[tuple[str, int, str], list[bool]] = defaultdict(list)
    for (name, ns, form, engine), p in zip(keys, peaks, strict=True):
        hit = p > SHIPPED.sensitivity
        hits[(name, ns)].append(hit)
        by[(name, ns, form)].append(hit)
        by[(name, ns, engine)].append(hit)
    print(
        f"babble at {a.snr:g} dB SNR, {len(vs)} voice settings × {len(FORMS)} forms, "
        f"cutoff {SHIPPED.sensitivity}"
    )
    print("babble      suppressor  all     alone   pause   breath  | espeak  flite   festival")
    out: dict[str, Any] = {}
    for (name, ns), h in hits.items():
        cols = [by[(name, ns, k)] for k in (*FORMS, "espeak", "flite", "festival")]
        print(
            f"{name:11s} {ns:>10d}  {np.mean(h):6.1%}  "
            + "  ".join(f"{np.mean(c):6.1%}" for c in cols[:3])
            + "  | "
            + "  ".join(f"{np.mean(c):6.1%}" for c in cols[3:])
        )
        out[f"{name}/ns{ns}"] = float(np.mean(h))
    print(
        f"active speech level above the corpus's level (isolated words): median "
        f"{np.median(gaps):.1f} dB, max {np.max(gaps):.1f} dB"
    )
    out["active_level_gap_db"] = float(np.median(gaps))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
