"""``mcp_local`` tools: agentd is the MCP client (the ``mcp`` SDK, optional extra
``agentd[mcp]``) of a server it starts over stdio or reaches over streamable HTTP.

Its tools are listed at start and again on ``notifications/tools/list_changed``, and offered
to the model as ordinary functions (so every dialect gets them, and the server's credentials
stay on the device). A server that dies or stops answering pings is restarted with the
project's backoff; its tools are withdrawn from the session meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from agentd.realtime.backoff import Backoff
from agentd.tools.registry import error_output
from agentd.tools.settings import ToolSettings

log = logging.getLogger("agentd.tools")

PING_S = 2.0  # a server that does not answer a ping this often is restarted
PING_TIMEOUT_S = 5.0
Listing = list[tuple[str, str, Mapping[str, Any]]]


class LocalServer:
    """One mcp_local entry: keeps its session alive; ``on_tools`` gets each listing (None
    when the server is gone)."""

    def __init__(
        self,
        settings: ToolSettings,
        headers: Mapping[str, str],
        on_tools: Callable[[ToolSettings, Listing | None], None],
        initial_s: float = 0.5,
        max_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.headers = dict(headers)
        self.on_tools = on_tools
        self.backoff = Backoff(initial_s, max_s)
        self.session: Any = None
        self.restarts = 0
        self.last_error: str | None = None
        self._changed = asyncio.Event()

    @property
    def name(self) -> str:
        return self.settings.name

    async def run(self) -> None:
        """Forever: connect, list, watch; after a failure wait out the backoff and retry."""
        while True:
            again = False
            try:
                await self._session_once()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the SDK raises ExceptionGroups from its task groups
                if not isinstance(exc, Exception | BaseExceptionGroup):
                    raise
                again, self.last_error = self.last_error == _describe(exc), _describe(exc)
            self.session = None
            self.on_tools(self.settings, None)
            self.backoff.disconnected(time.monotonic())
            delay = self.backoff.next_delay()
            self.restarts += 1
            log.log(
                logging.DEBUG if again else logging.WARNING,
                "MCP server %s stopped (%s); its tools are withdrawn; restarting in %.1f s",
                self.name,
                self.last_error,
                delay,
            )
            await asyncio.sleep(delay)

    async def _session_once(self) -> None:
        from mcp import ClientSession

        async with contextlib.AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            session = await stack.enter_async_context(
                ClientSession(read, write, message_handler=self._message)
            )
            await asyncio.wait_for(session.initialize(), self.settings.timeout_s)
            self.backoff.connected(time.monotonic())
            await self._list(session)
            self.session, self.last_error = session, None
            log.info("MCP server %s is up", self.name)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), PING_S)
                if self._changed.is_set():
                    self._changed.clear()
                    await self._list(session)
                else:
                    await asyncio.wait_for(session.send_ping(), PING_TIMEOUT_S)

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        t = self.settings
        if t.command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=t.command[0], args=list(t.command[1:]), env=dict(t.env), cwd=t.cwd
            )
            return stdio_client(params)
        import httpx2  # the SDK's own HTTP client
        from mcp.client.streamable_http import streamable_http_client

        assert t.url is not None
        client = httpx2.AsyncClient(headers=self.headers, timeout=httpx2.Timeout(30, read=300))
        return streamable_http_client(t.url, http_client=client)

    async def _message(self, message: Any) -> None:
        method = getattr(message, "method", None) or getattr(
            getattr(message, "root", None), "method", None
        )
        if method == "notifications/tools/list_changed":
            self._changed.set()

    async def _list(self, session: Any) -> None:
        result = await asyncio.wait_for(session.list_tools(), self.settings.timeout_s)
        listing: Listing = [
            (tool.name, tool.description or "", tool.input_schema or {}) for tool in result.tools
        ]
        log.info("MCP server %s lists %d tool(s)", self.name, len(listing))
        self.on_tools(self.settings, listing)

    async def call(self, name: str, args: Mapping[str, Any]) -> tuple[str, str]:
        """(output for the model, status for the log); cancelling cancels the request."""
        session = self.session
        if session is None:
            return error_output(f"the MCP server {self.name} is not running"), "server down"
        try:
            result = await asyncio.wait_for(
                session.call_tool(name, dict(args)), self.settings.timeout_s
            )
        except TimeoutError:
            return error_output(f"{name} timed out after {self.settings.timeout_s:g} s"), "timeout"
        except Exception as exc:
            self._changed.set()  # look again (and ping) soon
            return error_output(f"{name} failed: {_describe(exc)}"), "failed"
        text = _content_text(result)[: self.settings.output_max_bytes]
        if getattr(result, "is_error", False):
            return error_output(text or f"{name} failed"), "tool error"
        return text, "ok"


def _content_text(result: Any) -> str:
    parts = []
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else json.dumps(block.model_dump(mode="json")))
    structured = getattr(result, "structured_content", None)
    if not parts and structured is not None:
        parts.append(json.dumps(structured))
    return "\n".join(parts)


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:200]
