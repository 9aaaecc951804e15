"""check-config's rules for ``agent.tools``: each reported at ``agent.tools[i].key``."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import string
from typing import TYPE_CHECKING, Any

from agentd.tools.settings import BUILTINS, ToolSettings

if TYPE_CHECKING:
    from agentd.config.schema import Config

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
COMMON = {"name", "kind", "enabled", "description", "parameters"}
#: the keys each kind reads; any other key set on an entry is a mistake worth saying
KEYS: dict[str, set[str]] = {
    "builtin": {"name", "kind", "enabled", "description"},
    "command": COMMON | {"command", "timeout_s", "output_max_bytes", "cwd", "env"},
    "http": COMMON | {"method", "url", "body", "headers", "timeout_s", "output_max_bytes"},
    "mcp": {
        "name",
        "kind",
        "enabled",
        "description",
        "server_label",
        "server_url",
        "headers",
        "allowed_tools",
        "require_approval",
        "approve",
    },
    "mcp_local": {
        "name",
        "kind",
        "enabled",
        "command",
        "url",
        "headers",
        "env",
        "cwd",
        "allowed_tools",
        "timeout_s",
        "output_max_bytes",
    },
}
SECRET_SOURCES = ("file", "credential", "env")


def placeholders(template: str) -> list[str]:
    """The ``{name}`` fields of a template (``{{`` is a literal brace)."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError:
        return ["{"]  # an unbalanced brace: reported as such


def mcp_sdk_missing() -> bool:
    return importlib.util.find_spec("mcp") is None


def check_tools(cfg: Config, problems: list[str]) -> None:
    seen: set[str] = set()
    for i, tool in enumerate(cfg.agent.tools):
        _check_one(tool, f"agent.tools[{i}]", cfg.api.dialect, seen, problems)


def _check_one(t: ToolSettings, at: str, dialect: str, seen: set[str], problems: list[str]) -> None:
    if not NAME.match(t.name):
        problems.append(f"{at}.name: must be 1-64 letters, digits, _ or - (got {t.name!r})")
    if t.name in seen and t.kind != "mcp_local":
        problems.append(f"{at}.name: {t.name!r} is already the name of another tool")
    seen.add(t.name)
    defaults = ToolSettings(name=t.name, kind=t.kind)
    for f in dataclasses.fields(t):
        if f.name not in KEYS[t.kind] and getattr(t, f.name) != getattr(defaults, f.name):
            problems.append(f"{at}.{f.name}: not used by kind {t.kind}")
    if t.parameters is not None:
        _check_schema(t.parameters, f"{at}.parameters", problems)
    params = set(((t.parameters or {}).get("properties") or {}).keys())
    match t.kind:
        case "builtin":
            if t.name not in BUILTINS:
                problems.append(f"{at}.name: not a builtin tool; use one of {', '.join(BUILTINS)}")
        case "command":
            _check_command(t, at, params, problems)
        case "http":
            _check_http(t, at, params, problems)
        case "mcp":
            if dialect != "openai":
                problems.append(
                    f"{at}.kind: mcp (remote MCP servers called by the server) needs "
                    f"api.dialect: openai (got {dialect}); use kind: mcp_local instead"
                )
            for key in ("server_label", "server_url"):
                if getattr(t, key) is None:
                    problems.append(f"{at}.{key}: is required for kind mcp")
            if t.server_url is not None and not t.server_url.startswith("https://"):
                problems.append(f"{at}.server_url: must start with https:// (got {t.server_url!r})")
        case "mcp_local":
            if (t.command is None) == (t.url is None):
                problems.append(f"{at}.command: set either command (stdio) or url (HTTP)")
            if t.command is not None:
                _check_argv(t.command, f"{at}.command", problems)
            if t.url is not None and not t.url.startswith(("http://", "https://")):
                problems.append(f"{at}.url: must start with http:// or https:// (got {t.url!r})")
            if mcp_sdk_missing():
                problems.append(
                    f"{at}.kind: mcp_local needs the MCP SDK: pip install 'agentd[mcp]' "
                    "(scripts/install --extras mcp on the device)"
                )
    _check_headers(t.headers, f"{at}.headers", problems)
    if t.cwd is not None and not t.cwd.startswith("/"):
        problems.append(f"{at}.cwd: must be an absolute path (got {t.cwd!r})")


def _check_schema(schema: Any, at: str, problems: list[str]) -> None:
    import jsonschema

    if not isinstance(schema, dict) or schema.get("type") != "object":
        problems.append(f"{at}: must be a JSON Schema with type: object")
        return
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "".join(f".{p}" for p in exc.path)
        problems.append(f"{at}{where}: not a valid JSON Schema: {exc.message}")


def _check_argv(argv: tuple[str, ...], at: str, problems: list[str]) -> None:
    if not argv:
        problems.append(f"{at}: must name a program (an argv list like [/usr/bin/date])")
    elif not argv[0].startswith("/"):
        problems.append(
            f"{at}[0]: must be an absolute path (got {argv[0]!r}); no shell or PATH lookup is used"
        )


def _check_fields(template: str, at: str, params: set[str], problems: list[str]) -> None:
    for name in placeholders(template):
        if name == "{" or not name.isidentifier():
            problems.append(f"{at}: bad placeholder in {template!r} (write {{{{ for a brace)")
        elif name not in params:
            problems.append(f"{at}: {{{name}}} is not one of parameters.properties")


def _check_command(t: ToolSettings, at: str, params: set[str], problems: list[str]) -> None:
    if t.command is None:
        problems.append(f"{at}.command: is required for kind command (an argv list)")
        return
    _check_argv(t.command, f"{at}.command", problems)
    for j, arg in enumerate(t.command):
        _check_fields(arg, f"{at}.command[{j}]", params, problems)


def _check_http(t: ToolSettings, at: str, params: set[str], problems: list[str]) -> None:
    if t.url is None:
        problems.append(f"{at}.url: is required for kind http")
        return
    if not t.url.startswith(("http://", "https://")):
        problems.append(f"{at}.url: must start with http:// or https:// (got {t.url!r})")
    _check_fields(t.url, f"{at}.url", params, problems)

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            _check_fields(value, path, params, problems)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for j, v in enumerate(value):
                walk(v, f"{path}[{j}]")

    walk(t.body, f"{at}.body")


def _check_headers(headers: dict[str, Any], at: str, problems: list[str]) -> None:
    for name, value in headers.items():
        if isinstance(value, str):
            continue
        if (
            not isinstance(value, dict)
            or len(value) != 1
            or next(iter(value)) not in SECRET_SOURCES
        ):
            problems.append(
                f"{at}.{name}: must be a string or one of {{file: PATH}}, {{credential: NAME}}, "
                f"{{env: NAME}} (got {str(value)[:60]!r})"
            )
            continue
        ((source, ref),) = value.items()
        if not isinstance(ref, str) or not ref:
            problems.append(f"{at}.{name}.{source}: must be a string")
        elif source == "file" and not ref.startswith("/"):
            problems.append(f"{at}.{name}.file: must be an absolute path (got {ref!r})")
