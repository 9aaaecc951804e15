"""A command tool as shipped (issue 21): the daemon runs inside the unit's sandbox emulated
with bubblewrap + setpriv (tests/test_shipped.py's rig), and so does the program a tool starts
— as the daemon's user, on a read-only root, without the daemon's environment."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from agentd import control
from agentd.sim import Simulator
from tests.test_shipped import KEY, Shipped, needs_bwrap, shipped, start

__all__ = ["shipped"]  # the fixture, imported for pytest

PROBE = (
    "id -u; touch /usr/agentd-tool-probe 2>/dev/null && echo root-writable || echo root-read-only;"
    " env | cut -d= -f1 | sort | tr '\\n' ,"
)


@needs_bwrap
async def test_a_command_tool_runs_as_the_daemon_s_user_inside_the_sandbox(
    shipped: Shipped,
) -> None:
    mic, spk = shipped.audio(np.zeros(48000, "<i2"))
    async with Simulator("openai", pace=4.0, api_key=KEY) as sim:
        sim.tool_calls.append([("probe", {})])
        sim.tool_reply = "Done."
        shipped.write_config(
            {
                "api": {"url": sim.url},
                "audio": {
                    "input": {"device": mic, "rate": 48000, "channels": 2},
                    "output": {"device": spk, "rate": 48000, "channels": 2},
                },
                "agent": {
                    "tools": [
                        {"name": "probe", "kind": "command", "command": ["/bin/sh", "-c", PROBE]}
                    ]
                },
            }
        )
        shipped.write_key(KEY)
        running = await start(shipped, "tools")
        try:
            await running.until(lambda s: s["state"] == "idle" and s["connected"])
            sock = shipped.run / "control.sock"
            await asyncio.to_thread(control.request, sock, "ask", text="probe it")
            await running.until(lambda s: s["tool_calls"] == 1 and s["state"] == "idle", 30)
        finally:
            await running.stop()
        (out,) = [
            e["item"]["output"]
            for e in sim.client_events("conversation.item.create")
            if e["item"]["type"] == "function_call_output"
        ]
    uid, root, names = out.split()
    assert int(uid) == shipped.uid != 0
    assert root == "root-read-only"
    assert (
        names == "LANG,PATH,PWD,"
    )  # (PWD: set by sh itself) never the daemon's environment (NOTIFY_SOCKET, credentials)
    assert "tool probe (command) ran" in running.text()
    assert json.dumps(out)  # a plain string output
