"""The tools at run time: the registry, the MCP servers agentd is a client of, and running
one batch of calls (all at once, each bounded) — what the daemon calls for RunTools."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from agentd.tools import builtin
from agentd.tools.command import run_command
from agentd.tools.http import run_http
from agentd.tools.mcp_local import Listing, LocalServer
from agentd.tools.registry import Call, Registry, Tool, ToolError, bounded, error_output
from agentd.tools.secrets import HeaderError, resolve, resolve_all
from agentd.tools.settings import ToolSettings

log = logging.getLogger("agentd.tools")


class Toolbox:
    """``on_change``: what the session offers changed (an MCP server came or went)."""

    def __init__(
        self,
        settings: tuple[ToolSettings, ...],
        dialect: str,
        device: builtin.Device,
        on_change: Callable[[], None],
    ) -> None:
        self.dialect = dialect
        self.device = device
        self.on_change = on_change
        self.registry = Registry(settings, _resolve_or_empty)
        self.servers: dict[str, LocalServer] = {}
        for t in self.registry.local_servers:
            self.servers[t.name] = LocalServer(t, _headers(t), self._listed)

    def session_tools(self) -> tuple[dict[str, Any], ...]:
        return self.registry.session_tools(self.dialect)

    def server_runs(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """Each MCP server's keep-alive loop, for the daemon to supervise."""
        return {name: server.run for name, server in self.servers.items()}

    def _listed(self, server: ToolSettings, listing: Listing | None) -> None:
        changed = (
            self.registry.withdraw(server.name)
            if listing is None
            else self.registry.offer(server, listing)
        )
        if changed:
            self.on_change()

    async def run_batch(
        self, calls: tuple[Call, ...]
    ) -> tuple[tuple[tuple[str, str], ...], str | None]:
        """Every call's output (in call order) and the effect a builtin asks for (mute,
        end), if any. Cancelling cancels every call (kills processes, closes requests)."""
        results = await asyncio.gather(*(self.run_one(c) for c in calls))
        effects = [e for _, _, e in results if e is not None]
        return tuple((cid, out) for cid, out, _ in results), (effects[0] if effects else None)

    async def run_one(self, call: Call) -> tuple[str, str, str | None]:
        t0 = time.monotonic()
        effect: str | None = None
        kind = "?"
        try:
            tool, args = self.registry.check(call)
            kind = tool.kind
            output, status = await self._run(tool, args)
            if tool.kind == "builtin":
                effect = builtin.EFFECTS.get(tool.name)
        except ToolError as exc:
            output, status = error_output(str(exc)), "refused"
        except HeaderError as exc:
            output, status = error_output(f"the tool is misconfigured: {exc}"), "no secret"
        except asyncio.CancelledError:
            log.info("tool %s (%s) cancelled after %.0f ms", call.name, kind, _ms(t0))
            raise
        except Exception as exc:  # a tool's bug becomes an output the model can speak about
            log.exception("tool %s failed", call.name)
            output, status = error_output(f"the tool failed: {type(exc).__name__}"), "crashed"
        log.info("tool %s (%s) ran %.0f ms: %s", call.name, kind, _ms(t0), status)
        return call.call_id, bounded(output), effect

    async def _run(self, tool: Tool, args: dict[str, Any]) -> tuple[str, str]:
        t = tool.settings
        match tool.kind:
            case "builtin":
                return builtin.run_builtin(tool.name, args, self.device)
            case "command":
                assert t is not None
                return await run_command(t, args)
            case "http":
                assert t is not None
                return await run_http(t, args, resolve_all(t.headers))
            case "mcp_local":
                server = self.servers[tool.server or ""]
                return await server.call(tool.remote_name or tool.name, args)
        raise ToolError(f"{tool.name} cannot be run by the device")


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000


def _headers(t: ToolSettings) -> dict[str, str]:
    try:
        return resolve_all(t.headers)
    except HeaderError as exc:
        log.error("tool %s: a header cannot be read: %s", t.name, exc)
        return {}


def _resolve_or_empty(spec: Any) -> str:
    """A remote MCP server's header for session.update; unreadable → empty (and said)."""
    try:
        return resolve(spec)
    except HeaderError as exc:
        log.error("an MCP server header cannot be read: %s", exc)
        return ""
