"""A real MCP server written with the SDK, for the mcp_local tests: run as
``python tests/mcp_server.py stdio`` or ``... http PORT``.

Tools: ``add`` (a + b), ``whoami`` (the environment variable it was given), ``secret_admin``
(listed, to be filtered out by allowed_tools), ``learn`` (adds the tool ``fresh`` and sends
``notifications/tools/list_changed``), ``die`` (exits the process: a crash)."""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("agentd-test")


@server.tool(description="Add two integers")
def add(a: int, b: int) -> str:
    return str(a + b)


@server.tool(description="Who runs this server")
def whoami() -> str:
    return os.environ.get("TEST_WHO", "nobody")


@server.tool(description="Never offered: not in allowed_tools")
def secret_admin() -> str:
    return "should never run"


@server.tool(description="Learn a new tool")
async def learn(ctx: Context) -> str:
    server.add_tool(lambda: "fresh!", name="fresh", description="A tool learnt at run time")
    await ctx.request_context.session.send_tool_list_changed()
    return "learnt"


@server.tool(description="Crash the server")
def die() -> str:
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", port=int(sys.argv[2]))
