"""`python -m agentd.sim --port N --dialect D`: run the simulator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from agentd.sim.server import DEFAULT_REPLY, Simulator


async def _serve(args: argparse.Namespace) -> None:
    sim = Simulator(args.dialect, args.host, args.port, pace=args.pace, reply=args.reply)
    await sim.start()
    print(f"agentd simulator ({args.dialect}) listening on {sim.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agentd.sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--dialect", choices=["openai", "xstar", "openai-beta"], default="openai")
    p.add_argument("--pace", type=float, default=1.0, help="1 = real time, 0 = no pacing")
    p.add_argument("--reply", default=DEFAULT_REPLY, help="what the assistant says")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
