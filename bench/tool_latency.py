"""Function call done → output on the wire, excluding the tool's own run time (issue 21).

The real daemon (in-memory microphone and speaker: the figure is about the protocol path)
against the simulator over loopback. For each call the simulator timestamps the moment it
sent ``response.done`` (the response's calls are complete) and the moment the
``function_call_output`` arrived; the tool's own run time (measured around the runner) is
subtracted. Three kinds: builtin get_time, command /bin/echo, http to a local server.

.venv/bin/python bench/tool_latency.py [calls per kind]
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import yaml

from agentd import conversation as cv
from agentd.config import load
from agentd.service import Daemon, Hooks
from agentd.sim import Simulator
from tests.fakes import FakeCapture, FakePlayback

TARGET_P95_MS = 5.0


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


async def measure(calls: int) -> dict[str, float]:
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="agentd-tools-bench-"))
    sim = await Simulator("openai", pace=0).start()
    sim.tool_reply = "ok"
    done_at: list[float] = []
    send = sim._send

    async def stamped(ws: Any, event: dict[str, Any]) -> None:
        await send(ws, event)
        if event["type"] == "response.done" and event["response"]["output"]:
            done_at.append(time.monotonic())

    sim._send = stamped  # type: ignore[method-assign]
    tools = [
        {"name": "echo_text", "kind": "command", "command": ["/bin/echo", "hi"]},
        {
            "name": "ping",
            "kind": "http",
            "method": "POST",
            "url": f"http://127.0.0.1:{http.server_address[1]}/ping",
            "body": {"x": 1},
        },
    ]
    cfg = tmp / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "api": {"url": sim.url},
                "agent": {"tools": tools},
                "button": {"pin": None},
                "led": {"pin": None},
                "control": {"socket": str(tmp / "ctl.sock")},
                "logging": {"level": "warning"},
            }
        )
    )
    hooks = Hooks(
        use_gpio=False,
        make_capture=FakeCapture,
        make_playback=functools.partial(FakePlayback, clock=time.monotonic),
    )
    d = Daemon(cfg, load(cfg, require_key=False), hooks)
    run_times: list[float] = []
    run_one = d.toolbox.run_one

    async def timed(call: Any) -> Any:
        t0 = time.monotonic()
        try:
            return await run_one(call)
        finally:
            run_times.append(time.monotonic() - t0)

    d.toolbox.run_one = timed  # type: ignore[method-assign]
    task = asyncio.create_task(d.run())
    figures: dict[str, list[float]] = {"get_time": [], "echo_text": [], "ping": []}
    try:
        while d.conv.state is not cv.State.IDLE:
            await asyncio.sleep(0.01)
        for _ in range(calls):
            for name in figures:
                n = len(sim.events)
                sim.tool_calls.append([(name, {})])
                d.feed(cv.Announce("go", ask=True))
                while not any(
                    r.event.get("item", {}).get("type") == "function_call_output"
                    for r in sim.events[n:]
                ):
                    await asyncio.sleep(0.001)
                arrived = next(
                    r.t
                    for r in sim.events[n:]
                    if r.event.get("item", {}).get("type") == "function_call_output"
                )
                figures[name].append((arrived - done_at[-1] - run_times[-1]) * 1000)
                while d.conv.state is not cv.State.IDLE:
                    await asyncio.sleep(0.005)
    finally:
        d.stop_event.set()
        await asyncio.wait_for(task, 5)
        await sim.stop()
        http.shutdown()
    every = [x for xs in figures.values() for x in xs]
    out = {f"{k}_p95_ms": float(np.percentile(v, 95)) for k, v in figures.items()}
    out["p95_ms"] = float(np.percentile(every, 95))
    out["median_ms"] = float(np.median(every))
    out["calls"] = float(len(every))
    return out


def main(calls: int = 30) -> dict[str, float]:
    out = asyncio.run(measure(calls))
    print(json.dumps(out, indent=2))
    ok = "meets" if out["p95_ms"] <= TARGET_P95_MS else "MISSES"
    print(f"function call done → output on the wire, p95 {out['p95_ms']:.2f} ms ({ok} ≤ 5 ms)")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
