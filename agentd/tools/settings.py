"""One ``agent.tools`` entry: data only; which keys each kind uses is in :mod:`.check`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ToolKind = Literal["builtin", "command", "http", "mcp", "mcp_local"]
#: builtins on when agent.tools does not mention them: they only read
HARMLESS_BUILTINS = ("get_time", "get_status")
BUILTINS = ("get_time", "get_status", "set_volume", "mute", "end_conversation")


def _required() -> Any:
    """A key every entry must have (the validator reports it missing)."""
    return field(default=None, metadata={"range": (None, None)})


def _opt(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=default, metadata={"range": (lo, hi)})


@dataclass(frozen=True)
class ToolSettings:
    name: str = _required()
    """Unique name the model calls ([a-zA-Z0-9_-], ≤ 64); for builtin, which one."""
    kind: ToolKind = _required()
    """builtin | command | http | mcp (GA: the server calls it) | mcp_local (agentd calls it)."""
    enabled: bool = True
    """false switches the tool off (builtins get_time and get_status are on unless so)."""
    description: str = ""
    """What the tool does, for the model."""
    parameters: dict[str, Any] | None = None
    """JSON Schema of the arguments (an object schema); null = no arguments."""
    command: tuple[str, ...] | None = None
    """command / mcp_local (stdio): argv, never a shell; {param} placeholders (command)."""
    timeout_s: float = _opt(10.0, 0.1, 600)
    """Longest run (seconds); then the tool is killed and the model told so."""
    output_max_bytes: int = _opt(4096, 64, 1048576)
    """Output (or response body) kept at most (bytes); the rest is cut off."""
    cwd: str | None = None
    """command / mcp_local: absolute working directory; null = the daemon's (/)."""
    env: dict[str, str] = field(default_factory=dict)
    """command / mcp_local: environment variables set for the program (PATH, LANG are kept)."""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    """http: the HTTP method."""
    url: str | None = None
    """http: URL template with {param}; mcp_local: a streamable HTTP MCP server."""
    body: Any = None
    """http: JSON body template; strings "{param}" become the argument's value."""
    headers: dict[str, Any] = field(default_factory=dict)
    """http / mcp / mcp_local: Name: value, or {file: PATH} / {credential: NAME} / {env: NAME}."""
    server_label: str | None = None
    """mcp: the label the server shows for this MCP server."""
    server_url: str | None = None
    """mcp: the remote MCP server's URL (https://)."""
    allowed_tools: tuple[str, ...] | None = None
    """mcp / mcp_local: only these of the server's tools; null = all."""
    require_approval: Literal["always", "never"] = "never"
    """mcp: whether the server asks before each call."""
    approve: bool = False
    """mcp: how agentd answers the server's approval requests (true approves)."""
