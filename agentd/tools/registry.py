"""The tools on offer, pure: declared settings → the session's ``tools`` list per dialect,
a call's arguments checked against its JSON Schema (``jsonschema``), results → output text.

The daemon runs what this module has vetted; tools an MCP server lists (mcp_local) come and
go at run time through :meth:`Registry.offer` / :meth:`Registry.withdraw`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentd.tools.settings import BUILTINS, HARMLESS_BUILTINS, ToolSettings

EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
#: what each builtin tells the model and takes
BUILTIN_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "get_time": ("The device's local date, time and time zone.", EMPTY_SCHEMA),
    "get_status": (
        "The device's status: connected, uptime, last error, volume, muted.",
        EMPTY_SCHEMA,
    ),
    "set_volume": (
        "Set the speaker volume, 0 (silent) to 100 (loudest).",
        {
            "type": "object",
            "properties": {"percent": {"type": "integer", "minimum": 0, "maximum": 100}},
            "required": ["percent"],
        },
    ),
    "mute": ("Stop listening until the owner unmutes the device.", EMPTY_SCHEMA),
    "end_conversation": (
        "End the conversation now; the device waits for the button.",
        EMPTY_SCHEMA,
    ),
}
OUTPUT_MAX_CHARS = 16384  # what any output may put into the conversation


class ToolError(Exception):
    """A call that cannot run (unknown tool, bad arguments): its message goes to the model."""


@dataclass(frozen=True)
class Tool:
    """One function the model may call; ``server`` names the mcp_local entry it came from."""

    name: str
    kind: str
    description: str
    parameters: Mapping[str, Any]
    settings: ToolSettings | None = None
    server: str | None = None
    remote_name: str | None = None  # an mcp_local tool's name on its server

    def function(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }


@dataclass(frozen=True)
class Call:
    """One function call of a response, as the server sent it (arguments still JSON text)."""

    call_id: str
    name: str
    arguments: str
    response_id: str | None = None


@dataclass
class Registry:
    """What the session offers. ``resolve`` turns a header spec ({file|credential|env}) into
    its secret value (the daemon's, which also registers it for redaction)."""

    settings: tuple[ToolSettings, ...] = ()
    resolve: Callable[[Any], str] = str
    tools: dict[str, Tool] = field(default_factory=dict)
    servers: dict[str, dict[str, Tool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        listed = {t.name: t for t in self.settings if t.kind == "builtin"}
        for name in BUILTINS:
            t = listed.get(name)
            if (t is None and name in HARMLESS_BUILTINS) or (t is not None and t.enabled):
                desc, schema = BUILTIN_SPECS[name]
                self.tools[name] = Tool(name, "builtin", (t and t.description) or desc, schema, t)
        for t in self.settings:
            if t.enabled and t.kind in ("command", "http"):
                self.tools[t.name] = Tool(
                    t.name, t.kind, t.description, t.parameters or EMPTY_SCHEMA, t
                )

    @property
    def local_servers(self) -> list[ToolSettings]:
        return [t for t in self.settings if t.enabled and t.kind == "mcp_local"]

    def session_tools(self, dialect: str) -> tuple[dict[str, Any], ...]:
        """The ``tools`` of session.update: functions (ours and the MCP servers' we reach),
        and on OpenAI GA the remote MCP servers the server calls itself."""
        out = [t.function() for t in self.tools.values()]
        for listed in self.servers.values():
            out += [t.function() for t in listed.values() if t.name not in self.tools]
        if dialect == "openai":
            out += [self._mcp(t) for t in self.settings if t.enabled and t.kind == "mcp"]
        return tuple(out)

    def _mcp(self, t: ToolSettings) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "mcp",
            "server_label": t.server_label,
            "server_url": t.server_url,
            "require_approval": t.require_approval,
        }
        if t.headers:
            entry["headers"] = {k: self.resolve(v) for k, v in t.headers.items()}
        if t.allowed_tools is not None:
            entry["allowed_tools"] = list(t.allowed_tools)
        return entry

    def approves(self, server_label: str | None) -> bool:
        """The configured answer to a remote MCP server's approval request (unknown: no)."""
        return any(
            t.kind == "mcp" and t.server_label == server_label and t.approve for t in self.settings
        )

    # ------------------------------------------------------------------ mcp_local

    def offer(
        self, server: ToolSettings, listed: Iterable[tuple[str, str, Mapping[str, Any]]]
    ) -> bool:
        """An MCP server's listing (name, description, input schema), filtered by its
        allowed_tools; True when what the session offers changed."""
        allowed = server.allowed_tools
        tools = {
            name: Tool(name, "mcp_local", desc, _object_schema(schema), server, server.name, name)
            for name, desc, schema in listed
            if (allowed is None or name in allowed) and _usable(schema)
        }
        before = self.servers.get(server.name)
        self.servers[server.name] = tools
        return before != tools

    def withdraw(self, server: str) -> bool:
        """The server is gone: its tools leave the session until it is back."""
        return bool(self.servers.pop(server, None))

    # ------------------------------------------------------------------ calls

    def lookup(self, name: str) -> Tool | None:
        if name in self.tools:
            return self.tools[name]
        for listed in self.servers.values():
            if name in listed:
                return listed[name]
        return None

    def check(self, call: Call) -> tuple[Tool, dict[str, Any]]:
        """The tool and its validated arguments, or :class:`ToolError` saying what is wrong."""
        tool = self.lookup(call.name)
        if tool is None:
            raise ToolError(f"no tool named {call.name!r} is available now")
        try:
            args = json.loads(call.arguments or "{}")
        except (ValueError, RecursionError):
            raise ToolError("the arguments are not valid JSON") from None
        if not isinstance(args, dict):
            raise ToolError("the arguments must be a JSON object")
        import jsonschema  # on the first call: ~8 MB a device that never calls need not hold

        try:
            jsonschema.validate(args, dict(tool.parameters))
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
            raise ToolError(f"invalid arguments at {where}: {exc.message[:200]}") from None
        return tool, args


def _usable(schema: Any) -> bool:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(_object_schema(schema))
    except jsonschema.SchemaError:
        return False
    return True


def _object_schema(schema: Any) -> dict[str, Any]:
    if isinstance(schema, Mapping) and schema.get("type") == "object":
        return dict(schema)
    return dict(EMPTY_SCHEMA)


def error_output(message: str) -> str:
    """A failure the model can speak about: a JSON object with ``error``."""
    return json.dumps({"error": message[:1000]}, ensure_ascii=False)


def bounded(text: str, limit: int = OUTPUT_MAX_CHARS) -> str:
    """Output text as the conversation gets it: cut at ``limit`` with a note."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[output cut at {limit} characters]"
