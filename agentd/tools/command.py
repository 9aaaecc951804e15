"""``command`` tools: a program run from an argv list (never a shell), in its own process
group so that an interrupt or a timeout kills it and all it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Any

from agentd.tools.registry import error_output
from agentd.tools.settings import ToolSettings
from agentd.tools.templates import fill

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def argv_of(t: ToolSettings, args: Mapping[str, Any]) -> list[str]:
    """Each argv element filled on its own: an argument is one argv element whatever it
    holds (spaces, quotes, ``;``), since no shell ever parses it."""
    assert t.command is not None
    return [fill(a, args) for a in t.command]


def environment(t: ToolSettings) -> dict[str, str]:
    """Only what the entry names, on top of PATH and LANG: the daemon's own environment
    (which may hold the API key) never reaches a tool."""
    env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "LANG": os.environ.get("LANG", "C.UTF-8")}
    env.update(t.env)
    return env


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes, and whether there was more (then reading stops)."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        kept += chunk[:room]
        if len(chunk) > room:
            return bytes(kept), True
    return bytes(kept), False


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """A killed program: read its pipes to the end so its transport closes."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.communicate(), 1.0)


async def run_command(t: ToolSettings, args: Mapping[str, Any]) -> tuple[str, str]:
    """(output for the model, exit status for the log). Cancelling kills the process group."""
    starting = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *argv_of(t, args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=t.cwd,
            env=environment(t),
            start_new_session=True,
        )
    )
    try:
        # shielded: an interrupt while the pipes connect must still kill the whole group
        # (asyncio would kill only the program it started)
        proc = await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            _kill_group(await starting)
        raise
    except OSError as exc:
        return error_output(f"could not start the program: {exc.strerror or exc}"), "not started"
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr

    async def output() -> tuple[bytes, bool]:
        out, cut = await _read_capped(stdout, t.output_max_bytes)
        if cut:  # enough: a program that talks on forever is stopped here
            _kill_group(proc)
            # read the dead program's pipe to its end: a paused, unread pipe never closes,
            # and until it does asyncio's proc.wait() does not return (seen: 1 in 2 runs)
            while await stdout.read(65536):
                pass
        return out, cut

    try:
        (out, cut), (err, _) = await asyncio.wait_for(
            asyncio.gather(output(), _read_capped(stderr, 2048)), t.timeout_s
        )
        code = await asyncio.wait_for(proc.wait(), max(0.1, t.timeout_s))
    except TimeoutError:
        _kill_group(proc)
        await _reap(proc)
        return error_output(f"the command timed out after {t.timeout_s:g} s"), "timed out"
    finally:
        _kill_group(proc)  # cancelled (an interrupt), or children left behind
    text = out.decode("utf-8", "replace") + ("\n[output cut]" if cut else "")
    if cut:
        await _reap(proc)
        return text, f"output cut at {t.output_max_bytes} bytes"
    if code != 0:
        detail = err.decode("utf-8", "replace").strip()[-500:]
        return error_output(f"exit status {code}: {detail or text[-500:]}"), f"exit {code}"
    return text, "exit 0"
