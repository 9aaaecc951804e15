"""Wake word on the synthetic corpus (bench/wake_corpus.py), through the daemon's own code path.

    .venv/bin/python bench/wake_word.py            # figures at the shipped sensitivity + sweep
    .venv/bin/python bench/wake_word.py --quick    # a tenth of the corpus (development)
    .venv/bin/python bench/wake_word.py --noise-suppression 0   # the detector on the raw mic

Each file is cut into 20 ms frames and run through agentd.voice.wake (the detector path the
daemon builds: wake.noise_suppression's suppressor, then MicroDetector scores; WakePolicy debounce, ring buffer and word-end estimate), one pass per file; the policy is then
replayed at each cutoff of the sweep. Figures: recall per form and condition, false accepts
per hour of negatives, near-miss accept rate per phrase, detection latency after the word's
end, the word-end estimate's error, CPU per audio-second (suppressor + model), RSS delta of loading and running the
detector (separate process).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from wake_corpus import CONDITIONS, DEFAULT_DIR, NEAR_MISSES, OKAY_REQUESTS, Clip, build

from agentd.audio.frame import AudioFrame, chop
from agentd.config import WakeSettings
from agentd.voice import wake as wk

RATE = 16000
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
SHIPPED = WakeSettings().sensitivity
SHIPPED_NS = WakeSettings().noise_suppression
TARGETS = {
    "isolated/clean": 0.90,
    "pause/clean": 0.85,
    "breath/clean": 0.65,
    "all/10dB": 0.60,
}


def _scores(frames: list[AudioFrame], noise_suppression: int) -> dict[str, Any]:
    """One pass of the daemon's detector path (its noise suppressor, then the model):
    (t, p, frame index) per step, and its CPU time."""
    det = wk.make_detector(WakeSettings(words=["okay_nabu"], noise_suppression=noise_suppression))
    trace: list[tuple[float, float, int]] = []
    cpu0 = time.process_time()
    for i, f in enumerate(frames):
        for s in det.process(f):
            trace.append((s.t, s.p, i))
    cpu = time.process_time() - cpu0
    return {"trace": trace, "cpu": cpu, "seconds": sum(f.samples for f in frames) / RATE}


def _judge(
    trace: list[tuple[float, float, int]], cutoff: float, frames: list[AudioFrame] | None
) -> list[wk.Wake]:
    """The daemon's policy on a recorded trace: ring pushed frame by frame, judged before
    the frame is kept (as WakeListener does)."""
    pol = wk.WakePolicy(cutoff, WakeSettings().refractory_s)
    out: list[wk.Wake] = []
    pushed = 0
    for t, p, i in trace:
        if frames is not None:
            while pushed < i:
                pol.push(frames[pushed])
                pushed += 1
        w = pol.judge([wk.Score("okay_nabu", p, t)])
        if w is not None:
            out.append(w)
    return out


def _evaluate(item: tuple[str, Clip, int]) -> dict[str, Any]:
    root, clip, noise_suppression = item
    positive = clip.kind in ("isolated", "pause", "breath")
    frames = chop(np.fromfile(Path(root) / clip.file, "<i2").tobytes(), RATE, 20, start=0.0)
    r = _scores(frames, noise_suppression)
    res: dict[str, Any] = {"clip": clip.__dict__, **r}
    per: dict[str, Any] = {}
    for c in SWEEP:
        wakes = _judge(r["trace"], c, frames if positive else None)
        per[str(c)] = [(w.t, w.word_end) for w in wakes]
    res["wakes"] = per
    return res


def rss_delta(noise_suppression: int) -> dict[str, float]:
    """RSS of a fresh process before importing the engine, and after loading the model and
    running it on 60 s of noise (kB → MB)."""
    code = """
import re, numpy as np
def rss(): return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
from agentd.audio.frame import chop
from agentd.config import WakeSettings
a = rss()
from agentd.voice.wake import WakeListener
l = WakeListener(WakeSettings(noise_suppression=NS))
x = (np.random.default_rng(1).standard_normal(16000 * 60) * 300).astype("<i2")
for f in chop(x.tobytes(), 16000, 20):
    l.process(f)
import os
print(a, rss(), len(os.listdir("/proc/self/task")))
"""
    out = subprocess.run(
        [sys.executable, "-c", code.replace("NS", str(noise_suppression))],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    ).stdout.split()
    a, b, threads = int(out[0]), int(out[1]), int(out[2])
    return {"rss_before_mb": a / 1024, "rss_delta_mb": (b - a) / 1024, "threads": threads}


def summarize(results: list[dict[str, Any]], cutoff: float) -> dict[str, Any]:
    key = str(cutoff)
    rec: dict[str, list[bool]] = defaultdict(list)
    lat: list[float] = []
    cut: list[float] = []
    near: dict[str, list[bool]] = defaultdict(list)
    near_engine: dict[str, list[bool]] = defaultdict(list)
    engine_rec: dict[str, list[bool]] = defaultdict(list)
    fa, neg_s = 0, 0.0
    for r in results:
        c, wakes = r["clip"], r["wakes"][key]
        kind, cond = c["kind"], c["condition"]
        if kind == "negative":
            fa += len(wakes)
            neg_s += r["seconds"]
        elif kind == "near":
            near[c["text"]].append(bool(wakes))
            near_engine[c["engine"]].append(bool(wakes))
        else:
            hit = bool(wakes)
            rec[f"{kind}/{cond}"].append(hit)
            snr = cond[-2:] if cond[-2:].isdigit() else cond[-1:] if cond[-1].isdigit() else ""
            if snr:
                rec[f"all/{snr}dB"].append(hit)
            if cond == "clean":
                engine_rec[f"{kind}/{c['engine']}"].append(hit)
            if hit and c["word_end"] is not None:
                t, end = wakes[0]
                lat.append(t - c["word_end"])
                cut.append(end - c["word_end"])
    mean = {k: float(np.mean(v)) for k, v in sorted(rec.items())}
    return {
        "cutoff": cutoff,
        "recall": mean,
        "recall_n": {k: len(v) for k, v in rec.items()},
        "recall_by_engine_clean": {k: float(np.mean(v)) for k, v in sorted(engine_rec.items())},
        "false_accepts": fa,
        "negative_hours": neg_s / 3600,
        "false_accepts_per_hour": fa / max(neg_s / 3600, 1e-9),
        "near_miss": {k: float(np.mean(v)) for k, v in near.items()},
        "near_miss_by_engine": {k: float(np.mean(v)) for k, v in near_engine.items()},
        "near_miss_all": float(np.mean([x for v in near.values() for x in v])) if near else 0.0,
        "latency_median_s": float(np.median(lat)) if lat else float("nan"),
        "latency_p90_s": float(np.percentile(lat, 90)) if lat else float("nan"),
        "latency_max_s": float(np.max(lat)) if lat else float("nan"),
        "word_end_error_median_s": float(np.median(cut)) if cut else float("nan"),
        "word_end_error_p10_p90_s": (
            [float(np.percentile(cut, 10)), float(np.percentile(cut, 90))] if cut else []
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--quick", action="store_true", help="every tenth file")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument(
        "--noise-suppression",
        type=int,
        default=SHIPPED_NS,
        choices=range(5),
        help=f"wake.noise_suppression (shipped: {SHIPPED_NS}; 0: the detector hears the raw mic)",
    )
    ap.add_argument("--traces", type=Path, help="pickle every file's scores here (analysis)")
    a = ap.parse_args(argv if argv is not None else [])
    clips = build(a.dir, 66.0, a.jobs)
    if a.quick:
        clips = clips[::10]
    t0 = time.monotonic()
    with ProcessPoolExecutor(a.jobs) as pool:
        results = list(
            pool.map(_evaluate, [(str(a.dir), c, a.noise_suppression) for c in clips], chunksize=8)
        )
    if a.traces:
        with a.traces.open("wb") as fh:
            pickle.dump(results, fh)
    cpu = sum(r["cpu"] for r in results)
    secs = sum(r["seconds"] for r in results)
    sweep = {str(c): summarize(results, c) for c in SWEEP}
    shipped = summarize(results, SHIPPED)
    mem = rss_delta(a.noise_suppression)
    out = {
        "noise_suppression": a.noise_suppression,
        "shipped": shipped,
        "sweep": {
            k: {
                "recall": v["recall"],
                "fa_per_hour": v["false_accepts_per_hour"],
                "near_miss_all": v["near_miss_all"],
            }
            for k, v in sweep.items()
        },
        "cpu_per_audio_s": cpu / secs,
        "audio_hours": secs / 3600,
        "wall_s": time.monotonic() - t0,
        **mem,
    }
    print_table(out)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return {
        "isolated_clean": shipped["recall"].get("isolated/clean", float("nan")),
        "pause_clean": shipped["recall"].get("pause/clean", float("nan")),
        "breath_clean": shipped["recall"].get("breath/clean", float("nan")),
        "snr10": shipped["recall"].get("all/10dB", float("nan")),
        "fa_per_hour": shipped["false_accepts_per_hour"],
        "negative_hours": shipped["negative_hours"],
        "near_miss": shipped["near_miss_all"],
        "latency_median_ms": shipped["latency_median_s"] * 1000,
        "cpu_per_audio_s": out["cpu_per_audio_s"],
        "rss_delta_mb": mem["rss_delta_mb"],
    }


def print_table(out: dict[str, Any]) -> None:
    s = out["shipped"]
    print(
        f"wake word okay_nabu at sensitivity {s['cutoff']}, noise suppression "
        f"{out['noise_suppression']} ({out['audio_hours']:.2f} h of audio)"
    )
    print("recall (form/condition):")
    for k, v in s["recall"].items():
        target = TARGETS.get(k)
        mark = (
            "" if target is None else f"  target ≥ {target:.0%} {'ok' if v >= target else 'MISSED'}"
        )
        print(f"  {k:22s} {v:6.1%}  (n={s['recall_n'][k]}){mark}")
    print("recall, clean, by engine:")
    for k, v in s["recall_by_engine_clean"].items():
        print(f"  {k:22s} {v:6.1%}")
    print(
        f"false accepts: {s['false_accepts']} in {s['negative_hours']:.2f} h "
        f"({s['false_accepts_per_hour']:.2f}/h)"
    )
    print(f"near misses accepted: {s['near_miss_all']:.1%} overall")
    for phrase in [*NEAR_MISSES, OKAY_REQUESTS]:
        if phrase in s["near_miss"]:
            print(f"  {phrase!r:18s} {s['near_miss'][phrase]:6.1%}")
    for k, v in s["near_miss_by_engine"].items():
        print(f"  engine {k:10s} {v:6.1%}")
    print(
        f"latency after the word's end: median {s['latency_median_s'] * 1000:.0f} ms, "
        f"p90 {s['latency_p90_s'] * 1000:.0f} ms, max {s['latency_max_s'] * 1000:.0f} ms"
    )
    lo_hi = s["word_end_error_p10_p90_s"]
    if lo_hi:
        print(
            f"word-end estimate − true end: median {s['word_end_error_median_s'] * 1000:+.0f} ms, "
            f"p10..p90 {lo_hi[0] * 1000:+.0f}..{lo_hi[1] * 1000:+.0f} ms"
        )
    print(
        f"CPU per audio-second: {out['cpu_per_audio_s'] * 1000:.2f} ms "
        f"({out['cpu_per_audio_s']:.2%} of a core); RSS delta {out['rss_delta_mb']:.1f} MB "
        f"(process threads after: {out['threads']})"
    )
    print("sweep: cutoff  isolated  pause  breath  10dB  FA/h  near-miss")
    for c, v in out["sweep"].items():
        r = v["recall"]
        print(
            f"  {float(c):5.2f}  {r.get('isolated/clean', 0):7.1%} {r.get('pause/clean', 0):6.1%} "
            f"{r.get('breath/clean', 0):6.1%} {r.get('all/10dB', 0):6.1%} "
            f"{v['fa_per_hour']:5.2f} {v['near_miss_all']:6.1%}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
    _ = CONDITIONS
