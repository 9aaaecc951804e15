"""How long the cyclic garbage collector holds the real daemon up: `agentd run` (hands-free,
``echo.mode: aec``, the card rig, against the simulator), with a probe started in its own
process that, from PROBE_START_S on, forces a full collection every PROBE_EVERY_S and times
it. A collection holds the GIL: every thread of the daemon waits it out, Playback's writer
too, whose device holds 60 ms (continuous mode, ``echo.mode: aec``). Side by side, one
process after the other, RUNS times each: the daemon as it is (its start-up heap frozen as
it becomes ready: agentd/service.py freeze_heap) and with ``gc.freeze`` made a no-op (the
collector walks the start-up heap too). A component figure of the real daemon's process:
what a full collection costs when one comes, not how often one comes (in an idle daemon
seldom; through the echo rig's e2e bench, whose process holds more, one of 60 ms ran the
device dry: bench/echo.py --e2e prints its collections).

    .venv/bin/python bench/gc_pause.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import rigs

rigs.install_asoundrc()
DIR = rigs.RIG_DIR

import numpy as np  # noqa: E402

from agentd.sim import Simulator  # noqa: E402
from bench.daemon_rig import agentd_run, daemon_config  # noqa: E402

RUNS = 3
PROBE_START_S = 3.0  # after start: connected, devices open, READY=1 long sent (~0.4 s)
PROBE_EVERY_S = 0.5
PROBES = 10

# Runs in the daemon's process before agentd's __main__: the probe thread, and (asked) the
# freeze made a no-op. It writes what it measured after every collection (the bench stops
# the daemon with SIGTERM; the probe is a daemon thread).
PROBE = """
import gc, json, os, runpy, sys, threading, time
out, unfrozen = os.environ["GC_PROBE_OUT"], os.environ.get("GC_PROBE_UNFROZEN") == "1"
if unfrozen:
    gc.freeze = lambda: None
def probe():
    time.sleep(float(os.environ["GC_PROBE_START_S"]))
    ms = []
    for _ in range(int(os.environ["GC_PROBES"])):
        t = time.perf_counter()
        gc.collect()
        ms.append((time.perf_counter() - t) * 1000)
        got = {"ms": ms, "tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count()}
        with open(out + ".tmp", "w") as f:
            json.dump(got, f)
        os.replace(out + ".tmp", out)
        time.sleep(float(os.environ["GC_PROBE_EVERY_S"]))
threading.Thread(target=probe, daemon=True).start()
sys.argv = ["agentd", *sys.argv[1:]]
runpy.run_module("agentd", run_name="__main__", alter_sys=True)
"""


def one(sim_url: str, unfrozen: bool, k: int) -> dict[str, Any]:
    """One daemon's probe: its collections' pauses (ms), the objects the collector tracks
    and those frozen, and its time to READY=1."""
    cfg = daemon_config(
        DIR / "gc-pause.yaml",
        sim_url,
        DIR / "gc-pause.sock",
        "clockmic",
        "clockspk",
        audio={"input": {"period_ms": 20}, "output": {"channels": 2}},
        turn={"mode": "hands_free"},
        echo={"mode": "aec"},
    )
    out = DIR / f"gc-pause-{k}.json"
    out.unlink(missing_ok=True)
    env = {
        "GC_PROBE_OUT": str(out),
        "GC_PROBE_UNFROZEN": "1" if unfrozen else "0",
        "GC_PROBE_START_S": str(PROBE_START_S),
        "GC_PROBE_EVERY_S": str(PROBE_EVERY_S),
        "GC_PROBES": str(PROBES),
    }
    with agentd_run(cfg, DIR / "gc-pause.notify", launch=("-c", PROBE), env=env) as (_, ready):
        deadline = time.monotonic() + PROBE_START_S + PROBES * (PROBE_EVERY_S + 1) + 10
        while time.monotonic() < deadline:
            if out.exists() and len(json.loads(out.read_text())["ms"]) >= PROBES:
                break
            time.sleep(0.2)
    got: dict[str, Any] = json.loads(out.read_text())
    assert len(got["ms"]) >= PROBES, f"the probe made {len(got['ms'])} collections"
    got["ready_s"] = ready
    return got


def main() -> dict[str, float]:
    rng = np.random.default_rng(1)
    rigs.clock_pcms((rng.standard_normal(48000 * 3) * 30).astype("<i2"))  # quiet room noise
    got: dict[bool, list[dict[str, Any]]] = {False: [], True: []}

    async def each() -> None:
        async with Simulator("openai", pace=1.0) as sim:
            for k in range(RUNS):  # interleaved: the shared machine's load hits both alike
                for unfrozen in (False, True):
                    got[unfrozen].append(
                        await asyncio.to_thread(one, sim.url, unfrozen, 2 * k + unfrozen)
                    )

    asyncio.run(each())
    out: dict[str, float] = {}
    for unfrozen, runs in got.items():
        name = "unfrozen" if unfrozen else "frozen"
        ms = [m for r in runs for m in r["ms"]]
        out[f"{name}_pause_ms_median"] = float(np.median(ms))
        out[f"{name}_pause_ms_max"] = float(np.max(ms))
        out[f"{name}_tracked"] = float(np.median([r["tracked"] for r in runs]))
        out[f"{name}_frozen"] = float(np.median([r["frozen"] for r in runs]))
        out[f"{name}_ready_s"] = float(np.median([r["ready_s"] for r in runs]))
        print(
            f"{'gc.freeze made a no-op' if unfrozen else 'agentd as it is':24}: a full "
            f"collection held the daemon up {out[f'{name}_pause_ms_median']:.2f} ms median, "
            f"{out[f'{name}_pause_ms_max']:.2f} ms max ({len(ms)} in {len(runs)} daemons); "
            f"objects tracked {out[f'{name}_tracked']:.0f}, frozen "
            f"{out[f'{name}_frozen']:.0f}; READY=1 after {out[f'{name}_ready_s']:.2f} s",
            flush=True,
        )
    print(
        f"ratio (no-op / as it is, medians): "
        f"{out['unfrozen_pause_ms_median'] / out['frozen_pause_ms_median']:.1f}x"
    )
    return out


if __name__ == "__main__":
    main()
