"""Replay what a daemon's AEC3 was handed in an end-to-end run, offline (issue 22).

``bench/echo.py --e2e ... --aec3-inputs PREFIX`` keeps, per canceller the daemon made, every
``process()`` call's microphone and far end, the delay handed then and AEC3's output
(PREFIX_K.npz). AEC3 is deterministic: handed the same calls, a fresh one gives the output
back sample for sample, which this checks first. With ``--extra JSON`` the same calls go
through AEC3_CONFIG with those fields changed too, and both are weighed on the run's own
audio, side by side: how far the linear filter and the whole canceller take the microphone
down (dB, per 10 ms block where the far end handed sounds; median and p10). In the
echo-only cases (plain room, rig; K 1-4 in a full run) that is the echo removed; the trials'
canceller (the last K) also hears the talkers. Usage:

    .venv/bin/python bench/aec3_replay.py PREFIX_K.npz [--extra '{"field": value}']
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's agentd

from agentd.audio.echo import AEC3_CONFIG, AEC_DELAY, BLOCK, library

LOUD_RMS = 100.0  # a far-end block under this (int16 RMS) is not weighed


def replay(rec: dict[str, np.ndarray], config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """AEC3 with ``config`` handed the recorded calls: its output and linear output."""
    aec = library().EchoCanceller(16000, 1, 0, config=config)
    ends = np.cumsum(rec["n"])
    outs, lins, handed = [], [], None
    for k, (a, b) in enumerate(zip(ends - rec["n"], ends, strict=True)):
        if rec["delay"][k] != handed:
            handed = int(rec["delay"][k])
            aec.stream_delay_ms = handed
        outs.append(aec.process(rec["near"][a:b], rec["far"][a:b]))
        lins.append(aec.linear())
    return np.concatenate(outs), np.concatenate(lins)


def removal(rec: dict[str, np.ndarray], x: np.ndarray) -> tuple[float, float]:
    """Median and p10 of the microphone over ``x`` (AEC3's output lags it by AEC_DELAY), dB
    per 10 ms block, where the far end handed sounds."""
    near = rec["near"][: rec["near"].size - AEC_DELAY].astype(np.float64)
    out = x[AEC_DELAY:].astype(np.float64)
    far = rec["far"][: near.size].astype(np.float64)
    n = near.size // BLOCK * BLOCK

    def energy(v: np.ndarray) -> np.ndarray:
        b = v[:n].reshape(-1, BLOCK)
        return np.einsum("ij,ij->i", b, b) / BLOCK

    loud = energy(far) > LOUD_RMS**2
    db = 10 * np.log10(np.maximum(energy(near)[loud], 1.0) / np.maximum(energy(out)[loud], 1.0))
    return float(np.median(db)), float(np.percentile(db, 10))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("record", help="PREFIX_K.npz from bench/echo.py --e2e --aec3-inputs")
    ap.add_argument("--extra", default="{}", help="JSON fields changed in AEC3_CONFIG")
    a = ap.parse_args()
    rec = dict(np.load(a.record))
    out, lin = replay(rec, AEC3_CONFIG)
    same = np.array_equal(out, rec["out"])
    print(
        f"{a.record}: {rec['near'].size / 16000:.0f} s, {rec['n'].size} calls; the replay "
        f"gives the run's output back sample for sample: {same}"
    )
    rows = [("as shipped", out, lin)]
    extra = json.loads(a.extra)
    if extra:
        rows.append((json.dumps(extra), *replay(rec, {**AEC3_CONFIG, **extra})))
    for name, o, li in rows:
        lm, lp = removal(rec, li)
        om, op = removal(rec, o)
        print(
            f"  {name}: linear filter {lm:.1f} / {lp:.1f} dB, whole canceller {om:.1f} / "
            f"{op:.1f} dB (median / p10 over the far end's loud blocks)"
        )
    if not same:
        sys.exit("the replay differs from the run: another build or config than the run's")


if __name__ == "__main__":
    main()
